"""IDK: teach "I don't know"-style answers to the forget questions (NLL), plus the retain NLL."""

from __future__ import annotations

from typing import Any

from grun_cli.logprobs import answer_nll, sequence_nll
from grun_cli.methods import register
from grun_cli.methods.base import Batch, Method, ModelAccess
from grun_cli.settings import NllMethodSettings


class IdkSettings(NllMethodSettings):
    idk_answers: str | None  # a file of refusals, one per line; null: the built-in list
    pool: bool


@register("idk")
class IDK(Method):
    """``method.pool=true``: the refusal and retain answers' tokens in one token mean (the
    official release's baselines, which run both batches through one forward), so each side
    weighs by its token count; the weights then scale the two token sums. Default: the sum of
    two means (the GRUN release's own IDK, and OpenUnlearning's)."""

    needs_idk = True

    settings_type = IdkSettings

    def __init__(self, settings: IdkSettings) -> None:
        super().__init__(settings)
        self.pool = bool(settings.pool)

    def forget_loss(self, batch: Batch, model: ModelAccess) -> Any:
        inputs = batch["idk"]
        return answer_nll(model.forward(inputs, "forget"), inputs["labels"], self.reduction)

    def loss(self, batch: Batch, model: ModelAccess) -> dict[str, Any]:
        if not self.pool:
            return super().loss(batch, model)
        idk, retain = batch["idk"], batch["retain"]
        idk_sum, idk_n = sequence_nll(model.forward(idk, "forget"), idk["labels"])
        terms = {"forget_loss": idk_sum.sum() / idk_n.sum().clamp(min=1)}
        total, count = self.forget_weight * idk_sum.sum(), idk_n.sum()
        if self.retain_weight:
            retain_sum, retain_n = sequence_nll(model.forward(retain, "retain"), retain["labels"])
            terms["retain_loss"] = retain_sum.sum() / retain_n.sum().clamp(min=1)
            total, count = total + self.retain_weight * retain_sum.sum(), count + retain_n.sum()
        terms["loss"] = total / count.clamp(min=1)
        return terms
