"""IDK: teach "I don't know"-style answers to the forget questions (NLL), plus the retain NLL."""

from __future__ import annotations

from typing import Any

from grun_cli.logprobs import token_mean_nll
from grun_cli.methods import register
from grun_cli.methods.base import Batch, Method, ModelAccess


@register("idk")
class IDK(Method):
    needs_idk = True

    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        inputs = batch["idk"]
        return token_mean_nll(model.forward(inputs, "forget"), inputs["labels"])
