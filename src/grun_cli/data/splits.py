"""TOFU's split vocabulary, shared by the real and the synthetic data set."""

from __future__ import annotations

import re

from grun_cli.errors import GrunError

FORGET_PERCENTS = (1, 5, 10, 20, 30, 50, 90)
RETAIN_PERCENTS = (10, 50, 70, 80, 90, 95, 99)
PERTURBED_FORGET = (1, 5, 10)

#: Splits whose rows belong to the fictitious authors (and so take part in author subsets).
AUTHOR_SPLITS: tuple[str, ...] = (
    "full",
    *(f"forget{p:02d}" for p in FORGET_PERCENTS),
    *(f"retain{p:02d}" for p in RETAIN_PERCENTS),
    *(f"forget{p:02d}_perturbed" for p in PERTURBED_FORGET),
    "retain_perturbed",
)
#: General-knowledge splits (no authors): what a pretrained model already knows.
KNOWLEDGE_SPLITS: tuple[str, ...] = (
    "real_authors",
    "real_authors_perturbed",
    "world_facts",
    "world_facts_perturbed",
)
ALL_SPLITS: tuple[str, ...] = AUTHOR_SPLITS + KNOWLEDGE_SPLITS

_FORGET_RE = re.compile(r"^forget(\d\d)$")


def forget_percent(split: str) -> int:
    m = _FORGET_RE.match(split)
    if not m or int(m.group(1)) not in FORGET_PERCENTS:
        raise GrunError(
            f"unknown forget split '{split}'; choose one of: "
            + ", ".join(f"forget{p:02d}" for p in FORGET_PERCENTS)
        )
    return int(m.group(1))


def default_retain_split(forget_split: str) -> str:
    """TOFU's complement: forget05 -> retain95, forget10 -> retain90, ..."""
    return f"retain{100 - forget_percent(forget_split):02d}"


def check_split(split: str) -> None:
    if split not in ALL_SPLITS:
        raise GrunError(
            f"unknown split '{split}'; choose forget, retain or one of: {', '.join(ALL_SPLITS)}"
        )
