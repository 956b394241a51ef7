"""``paraphrase``: the forget questions asked in TOFU's paraphrased wording
(``paraphrased_question`` of the perturbed splits), scored against the same answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grun_cli.eval.attacks import PromptAttack, register


@register("paraphrase")
class Paraphrase(PromptAttack):
    evaluations = ("tofu",)

    def question(self, row: Mapping[str, Any]) -> str:
        return str(row["paraphrased_question"])
