"""Where the local multiple-choice question files (WMDP-bio, WMDP-cyber, MMLU) are under the
data root: read by the offline lm-eval tasks (eval/lm_tasks/local_data.py) and by GRUN's named
gate-negative sets."""

from __future__ import annotations

import os
from pathlib import Path

#: Files looked for under the data root, first found wins (the full MMLU test set as
#: mmlu/mmlu.jsonl if you have it, else the 500-question sample).
DEFAULT_FILES = {
    "wmdp_bio": ("wmdp/bio_test.jsonl",),
    "wmdp_cyber": ("wmdp/cyber_test.jsonl",),
    "mmlu": ("mmlu/mmlu.jsonl", "mmlu/mmlu_sample500.jsonl"),
}


def default_file(task: str, root: str | None = None) -> Path | None:
    """The local questions file of ``task`` under ``root`` (default $GRUN_DATA_DIR)."""
    root = root or os.environ.get("GRUN_DATA_DIR")
    if not root:
        return None
    for name in DEFAULT_FILES[task]:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return Path(root) / DEFAULT_FILES[task][-1]
