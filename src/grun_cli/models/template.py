"""Prompt template and QA encoding: prompt tokens masked, answer tokens + eos as labels.

Prompt and answer are tokenized separately and concatenated, so the prompt used for
generation is exactly the prefix the model was trained on (no BPE merge across the seam).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grun_cli.logprobs import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "PromptTemplate"]


@dataclass(frozen=True)
class PromptTemplate:
    prompt: str = "Question: {question}\nAnswer:"
    answer: str = " {answer}"
    add_bos: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> PromptTemplate:
        return cls(prompt=cfg["prompt"], answer=cfg["answer"], add_bos=bool(cfg.get("add_bos", True)))

    @classmethod
    def for_model(cls, model_cfg: Mapping[str, Any]) -> PromptTemplate:
        """The model's template: ``model.template`` itself (prompt / answer / add_bos), or the
        name of one of ``model.templates`` (``model.template=chat``)."""
        chosen = model_cfg["template"]
        if isinstance(chosen, str):
            named = model_cfg.get("templates") or {}
            if chosen not in named:
                from grun_cli.errors import GrunError

                raise GrunError(f"model.template={chosen}: model={model_cfg.get('name')} has "
                                + (f"the templates {', '.join(named)}" if named else "no named templates")
                                + "; choose one, or give model.template.prompt / answer / add_bos")
            chosen = named[chosen]
        return cls.from_config(chosen)

    def prompt_ids(self, tokenizer: Any, question: str) -> list[int]:
        ids = tokenizer(self.prompt.format(question=question), add_special_tokens=False)["input_ids"]
        if self.add_bos and tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id, *ids]
        return ids

    def answer_ids(self, tokenizer: Any, answer: str) -> list[int]:
        ids = tokenizer(self.answer.format(answer=answer), add_special_tokens=False)["input_ids"]
        return [*ids, tokenizer.eos_token_id]

    def encode(self, tokenizer: Any, question: str, answer: str, max_length: int) -> dict[str, list[int]]:
        """input_ids and labels (prompt = IGNORE_INDEX); the answer is cut to fit max_length."""
        p = self.prompt_ids(tokenizer, question)
        a = self.answer_ids(tokenizer, answer)[: max(0, max_length - len(p))]
        if not a:
            from grun_cli.errors import GrunError

            raise GrunError(
                f"the prompt alone is {len(p)} tokens, over model.max_length={max_length} "
                f"({question[:60]!r}); raise model.max_length"
            )
        return {"input_ids": p + a, "labels": [IGNORE_INDEX] * len(p) + a, "prompt_len": len(p)}
