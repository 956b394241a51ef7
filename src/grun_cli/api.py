"""Python API: load a `grun unlearn` run and use the model exactly as it was trained.

    from grun_cli.api import load_run
    run = load_run("outputs/unlearn/2026-11-27_12-00-00")
    run.generate(["Where was Jonas Delacroix born?"])     # edit applied as in training
    with run.disabled():                                 # the starting model
        run.generate(["Where was Jonas Delacroix born?"])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.models.template import PromptTemplate


class UnlearnedModel:
    """A base model with its trained adapter: generation and scoring with the edit on,
    ``disabled()`` for the starting model."""

    def __init__(self, model: Any, tokenizer: Any, adapter: Any, template: PromptTemplate,
                 run_dir: Path, card: dict[str, Any], max_length: int) -> None:
        self.model, self.tokenizer, self.adapter = model, tokenizer, adapter
        self.template, self.run_dir, self.card, self.max_length = template, run_dir, card, max_length
        self._base: Any = None

    @property
    def kind(self) -> str:
        return self.adapter.kind

    @contextlib.contextmanager
    def disabled(self) -> Iterator[UnlearnedModel]:
        """The model before unlearning: edit off (GRUN, LoRA) or the base weights (full)."""
        if self.kind != "full":
            with self.adapter.disabled():
                yield self
            return
        if self._base is None:
            self._base = _load_hf(self.card["base_model"]["source"], self.card["base_model"].get("revision"),
                                  self.model.dtype)
        saved = self.model
        self.model = self._base
        try:
            yield self
        finally:
            self.model = saved

    def _adapter_for_call(self) -> Any:
        return self.adapter if self.model is self.adapter.model else None

    def generate(self, questions: Sequence[str], max_new_tokens: int = 200, batch_size: int = 32) -> list[str]:
        from grun_cli.scoring.generation import greedy_answers

        return greedy_answers(self.model, self.tokenizer, self.template, questions,
                              max_new_tokens=max_new_tokens, batch_size=batch_size,
                              adapter=self._adapter_for_call())

    def answer_probability(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[float]:
        """exp(-mean token NLL) of each (question, answer)."""
        import math

        from grun_cli.scoring.likelihood import answer_avg_loss

        losses = answer_avg_loss(self.model, self.tokenizer, self.template, pairs, max_length=self.max_length,
                                 batch_size=batch_size, adapter=self._adapter_for_call())
        return [math.exp(-x) for x in losses]

    def gates(self, questions: Sequence[str]) -> Any:
        """GRUN gate values (n_questions, n_layers) at the last prompt token; None otherwise."""
        from grun_cli.eval.gates import gate_values

        return gate_values(self.adapter, self.tokenizer, self.template, questions)


def _load_hf(source: str, revision: str | None, dtype: Any = None) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(source, revision=revision, dtype=dtype or "auto",
                                                    trust_remote_code=False)  # a run folder never runs code
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise GrunError(f"the base model '{source}' of this run contains custom code, which grun does not run "
                        "when loading a run folder") from e
    except OSError as e:
        raise GrunError(f"cannot load base model '{source}' of this run: {str(e).splitlines()[0]}") from e


def load_run(run_dir: str | Path, device: str = "auto") -> UnlearnedModel:
    """Load a completed `grun unlearn` run directory (on the GPU when there is one)."""
    from transformers import AutoTokenizer

    from grun_cli.adapters import load_adapter
    from grun_cli.adapters.base import read_adapter_config
    from grun_cli.train.run_card import read_run_card

    run_dir = Path(run_dir)
    card = read_run_card(run_dir, "unlearn")
    adapter_dir = run_dir / "adapter"
    saved = read_adapter_config(adapter_dir)
    base = saved["base_model"]
    dtype = card["config"]["model"].get("dtype")
    torch_dtype = None if dtype in (None, "auto") else getattr(__import__("torch"), dtype)
    source = str(adapter_dir) if saved["kind"] == "full" else base["source"]
    model = _load_hf(source, None if saved["kind"] == "full" else base.get("revision"), torch_dtype)
    from grun_cli.models.loading import resolve_device

    model.to(resolve_device(device))
    adapter = load_adapter(model, adapter_dir)
    model_cfg = card["config"]["model"]
    return UnlearnedModel(
        model=adapter.model, tokenizer=AutoTokenizer.from_pretrained(adapter_dir / "tokenizer"),
        adapter=adapter, template=PromptTemplate.for_model(model_cfg), run_dir=run_dir,
        card=card, max_length=int(model_cfg["max_length"]))
