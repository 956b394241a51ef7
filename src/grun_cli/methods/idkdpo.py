"""IdkDPO: DPO with the IDK answer preferred over the true forget answer, plus the retain NLL."""

from __future__ import annotations

from typing import Any

from grun_cli.methods import register
from grun_cli.methods.base import Batch, Method, ModelAccess, forget_nll, reference_nll
from grun_cli.methods.losses import dpo_loss
from grun_cli.settings import NllMethodSettings, Positive


class IdkDpoSettings(NllMethodSettings):
    beta: Positive
    idk_answers: str | None  # a file of refusals, one per line; null: the built-in list


@register("idkdpo")
class IdkDPO(Method):
    references = {"forget": "nll", "idk": "nll"}
    needs_idk = True

    settings_type = IdkDpoSettings

    def __init__(self, settings: IdkDpoSettings) -> None:
        super().__init__(settings)
        self.beta = float(settings.beta)

    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        win = reference_nll(batch, model, "idk") - forget_nll(batch, model, "idk")[0]
        lose = reference_nll(batch, model, "forget") - forget_nll(batch, model, "forget")[0]
        return dpo_loss(win, lose, self.beta)
