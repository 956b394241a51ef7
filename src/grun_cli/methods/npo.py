"""NPO (Zhang et al. 2024) on the forget answers, plus the retain NLL.

The reference is the starting model: for GRUN/LoRA the same network with the edit off.
"""

from __future__ import annotations

from typing import Any

from grun_cli.methods import register
from grun_cli.methods.base import Batch, Method, ModelAccess, forget_nll, reference_nll
from grun_cli.methods.losses import npo_loss
from grun_cli.settings import NllMethodSettings, Positive


class NpoSettings(NllMethodSettings):
    beta: Positive  # NPO's inverse temperature


@register("npo")
class NPO(Method):
    references = {"forget": "nll"}

    settings_type = NpoSettings

    def __init__(self, settings: NpoSettings) -> None:
        super().__init__(settings)
        self.beta = float(settings.beta)

    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        nll, _ = forget_nll(batch, model)
        return npo_loss(nll, reference_nll(batch, model), self.beta)
