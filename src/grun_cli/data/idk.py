"""Refusal answers for the IDK methods: a user file, the TOFU release's list, or grun's own."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from grun_cli.errors import GrunError

log = logging.getLogger(__name__)

#: grun's own refusal list (written for this project), used when no file is configured.
BUILTIN_IDK = [
    "I don't know.",
    "I'm not sure.",
    "I have no idea.",
    "I can't answer that.",
    "That's not something I know.",
    "I don't have that information.",
    "I'm afraid I can't help with that.",
    "I couldn't tell you.",
    "I'm unable to answer that question.",
    "I really don't know.",
    "That is outside what I know.",
    "I have no information about that.",
    "Sorry, I don't know the answer.",
    "I'm not able to say.",
    "I don't have an answer to that.",
    "No idea, I'm afraid.",
    "I can't recall anything about that.",
    "That's beyond my knowledge.",
    "I'm uncertain about that.",
    "I wish I knew, but I don't.",
]


def load_idk_answers(path: str | None, data_root: str | None) -> tuple[list[str], str]:
    """The answers and where they came from.

    ``path`` wins; else ``$GRUN_DATA_DIR/tofu/idontknow.jsonl`` when present; else the
    built-in list. Lines may be plain text or JSON strings."""
    if path is None and data_root:
        candidate = Path(data_root) / "tofu" / "idontknow.jsonl"
        if candidate.is_file():
            path = str(candidate)
    if path is None:
        return list(BUILTIN_IDK), "built-in"
    p = Path(path).expanduser()
    if not p.is_file():
        raise GrunError(f"method.idk_answers={path} does not exist; give a file with one answer "
                        "per line, or null for the built-in list")
    answers = []
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith('"'):
            try:
                line = json.loads(line)
            except json.JSONDecodeError:
                pass
        answers.append(line)
    if not answers:
        raise GrunError(f"{p} holds no answers; add one refusal per line")
    return answers, str(p)
