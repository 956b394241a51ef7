"""The error catalogue: each user mistake, through the real `grun` CLI, ends in exit status 2 and
one line on stderr naming the cause and the fix, with no traceback, within seconds, and leaves
nothing in the run folder that looks complete. One row per mistake, so the catalogue reads as a
list of what grun refuses and how it says so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import grun

SMALL = ["data.num_authors=30", "data.subset.retain_authors=3", "logger=none"]

# (id, command and arguments, a fragment of the one line)
CATALOGUE = [
    # -- the command line and Hydra's composition ------------------------------------------
    ("unknown-command", ["frobnicate"], "unknown command 'frobnicate'; choose one of"),
    ("unknown-model", ["unlearn", "model=gpt5"], "model=gpt5 is not a config option; choose one of: hf,"),
    ("unknown-adapter-typo", ["unlearn", "adapter=gurn"], "adapter=gurn is not a config option; choose one of: full, grun, lora (did you mean grun?)"),
    ("unknown-method", ["finetune", "method=npo"], "method is not a setting of `grun finetune`"),
    ("unknown-experiment", ["unlearn", "experiment=nope"], "experiment=nope is not a config option"),
    ("experiment-typo", ["unlearn", "experiment=tiny_tofu/npo_gurn"], "(did you mean tiny_tofu/npo_grun?)"),
    ("unknown-key-typo", ["unlearn", "train.lrr=1"], "train.lrr is not a setting of `grun unlearn` (did you mean train.lr?); to add a new key on purpose write +train.lrr="),
    ("unknown-top-key", ["eval", "methd=npo"], "methd is not a setting of `grun eval`"),
    ("unparsable-override", ["unlearn", "train.lr=="], "cannot parse override 'train.lr=='"),
    ("group-given-a-number", ["unlearn", "train=3"], "a config group takes an option name"),
    # -- data --------------------------------------------------------------------------------
    ("unknown-split", ["finetune", "split=forget07", *SMALL], "unknown split 'forget07'"),
]


@pytest.mark.parametrize("args, fragment", [pytest.param(a, f, id=i) for i, a, f in CATALOGUE])
def test_catalogue(clean_env: dict[str, str], tmp_path: Path, args: list[str], fragment: str) -> None:
    run = tmp_path / "run"
    started = time.time()
    r = grun(*args, f"hydra.run.dir={run}", env=clean_env)
    took = time.time() - started
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("grun"), r.stderr[-3000:]
    assert "error:" in lines[0] and fragment in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not (run / "run_card.json").exists() and not (run / "metrics.json").exists()
    # quiet 2-core machine: ~0.5-1 s for composition mistakes, ~4 s for the data row (torch is
    # imported to seed); the bound leaves room for a loaded machine
    assert took < 20, f"{took:.1f} s to fail"
