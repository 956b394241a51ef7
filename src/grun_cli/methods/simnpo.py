"""SimNPO (Fan et al. 2024): NPO without a reference, on length-normalised NLL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grun_cli.methods import register
from grun_cli.methods.base import Batch, Method, ModelAccess, forget_nll
from grun_cli.methods.losses import simnpo_loss


@register("simnpo")
class SimNPO(Method):
    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.beta = float(cfg.get("beta", 4.5))
        self.delta = float(cfg.get("delta", 0.0))

    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        nll, n_tokens = forget_nll(batch, model)
        return simnpo_loss(nll / n_tokens.clamp(min=1), self.beta, self.delta)
