"""``prompt_format``: each forget question asked out of its training format, after a few
unrelated question-answer pairs (TOFU's world-facts rows) written in another layout
(``Q: ... / A: ...``), all inside the model's prompt template. GRUN's gate reads the last prompt
token: this probes whether it still recognises a forget question in another context, and
whether the model answers it from the knowledge the edit suppressed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.eval.attacks import PromptAttack, register

#: the evaluation set the few-shot pairs come from: unrelated to any author
SHOT_SET = "wf"


@register("prompt_format")
class PromptFormat(PromptAttack):
    evaluations = ("tofu",)

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.shots = self.settings.get("shots", 3)
        self.seed = self.settings.get("seed", 0)
        self.prefix = ""

    def problems(self, evaluation: str, adapter: str | None) -> Iterator[str]:
        yield from super().problems(evaluation, adapter)
        if not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 0:
            yield f"eval.attack_settings.prompt_format.shots={self.shots!r}: give a count (0 or more)"

    def prepare(self, sets: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        pool = list(sets.get(SHOT_SET) or [])
        if len(pool) < self.shots:
            raise GrunError(f"prompt_format: {self.shots} few-shot pairs asked for, the {SHOT_SET} set has "
                            f"{len(pool)} rows; lower eval.attack_settings.prompt_format.shots")
        chosen = random.Random(int(self.seed)).sample(pool, self.shots)
        self.prefix = "".join(f"Q: {r['question']}\nA: {r['answer']}\n\n" for r in chosen)

    def question(self, row: Mapping[str, Any]) -> str:
        return f"{self.prefix}Q: {row['question']}"
