"""SimNPO (Fan et al. 2024): NPO without a reference, on length-normalised NLL."""

from __future__ import annotations

from typing import Any

from grun_cli.methods import register
from grun_cli.methods.base import Batch, Method, ModelAccess, forget_nll
from grun_cli.methods.losses import simnpo_loss
from grun_cli.settings import NllMethodSettings, Positive


class SimNpoSettings(NllMethodSettings):
    beta: Positive
    delta: float  # the reward margin gamma of the SimNPO paper


@register("simnpo")
class SimNPO(Method):
    settings_type = SimNpoSettings

    def __init__(self, settings: SimNpoSettings) -> None:
        super().__init__(settings)
        self.beta = float(settings.beta)
        self.delta = float(settings.delta)

    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        nll, n_tokens = forget_nll(batch, model)
        return simnpo_loss(nll / n_tokens.clamp(min=1), self.beta, self.delta)
