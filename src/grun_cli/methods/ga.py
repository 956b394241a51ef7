"""Gradient ascent: raise the NLL of the forget answers; no retain term by default."""

from __future__ import annotations

from typing import Any

from grun_cli.logprobs import answer_nll
from grun_cli.methods import register
from grun_cli.methods.base import Batch, Method, ModelAccess


@register("ga")
class GradientAscent(Method):

    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        inputs = batch["forget"]
        return -answer_nll(model.forward(inputs, "forget"), inputs["labels"], self.reduction)
