"""Extra negatives for GRUN's gate (``adapter.gate_negatives``, beyond the paper, off by
default): prompts that are neither forget nor retain rows, each step's batch gets one per item
and the gate learns to stay shut on them (BCE label 0, like retain prompts).

Why: with TOFU retain rows as its only negatives, the gate half-fires on general questions
(real authors, world facts: 0.25-0.40 on the tiny model), and that is where GRUN's utility loss
comes from. Negatives must not be evaluation rows: ``mmlu`` (the MMLU questions under
$GRUN_DATA_DIR) is refused when the run's evaluation scores MMLU.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError

#: named negative sets: name -> the lm-eval task whose local questions file it reads
NAMED = {"mmlu": "mmlu"}


def negative_file(spec: str, data_root: str | None) -> Path:
    """The file a ``gate_negatives`` entry names: a named set or a path."""
    if spec in NAMED:
        from grun_cli.data.mcq_files import default_file

        path = default_file(NAMED[spec], data_root)
        if path is None or not path.is_file():
            raise GrunError(f"adapter.gate_negatives=[{spec}] reads the MMLU questions under GRUN_DATA_DIR "
                            f"({path or 'GRUN_DATA_DIR is not set'}); set GRUN_DATA_DIR or give a file")
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise GrunError(f"adapter.gate_negatives: {spec} is neither a named set ({', '.join(NAMED)}) nor a file; "
                        "give a JSON-Lines file with question or text fields, or a .txt file, one prompt per line")
    return path


def read_prompts(specs: Sequence[str], data_root: str | None) -> list[str]:
    """Every prompt of the named sets / files, in order."""
    prompts: list[str] = []
    for spec in specs:
        path = negative_file(str(spec), data_root)
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if path.suffix == ".txt":
            prompts.extend(ln.strip() for ln in lines)
            continue
        for n, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise GrunError(f"{path}:{n} is not JSON; gate negatives are JSON Lines (question or text) "
                                "or a .txt file") from None
            text = row.get("question") or row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise GrunError(f"{path}:{n} has no question or text field")
            prompts.append(text)
    if not prompts:
        raise GrunError(f"adapter.gate_negatives={list(specs)} holds no prompts")
    return prompts


def encode_negatives(prompts: Sequence[str], source: Any, tokenizer: Any, template: Any,
                     max_length: int) -> list[dict[str, Any]]:
    """Features the gate reads: a QA run's prompt template around each question (the gate at
    its last token), a text run's text up to its cut. Prompts longer than max_length are left out."""
    feats = []
    for text in prompts:
        feat = source.gate_negative(tokenizer, template, text, max_length)
        if feat is not None:
            feats.append(feat)
    if not feats:
        raise GrunError(f"every gate negative is longer than model.max_length={max_length}; raise it or give "
                        "shorter prompts")
    return feats


def conflicts(specs: Sequence[str], evaluation: Mapping[str, Any]) -> list[str]:
    """Negatives the run's own evaluation scores (the gate would be trained on test questions)."""
    tasks = [str(t) for t in evaluation.get("tasks") or []] if evaluation.get("kind") == "lm_eval" else []
    return [f"adapter.gate_negatives=[{s}]: the evaluation scores {NAMED[s]} (eval.tasks); the gate would be "
            f"trained on its test questions; give other negatives or drop {NAMED[s]} from eval.tasks"
            for s in specs if s in NAMED and NAMED[s] in tasks and evaluation.get("enabled", True)]
