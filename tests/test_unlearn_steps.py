"""eval.at_steps: the TOFU evaluation at chosen training steps, into steps/<n>/, without
changing the training (the same final metrics and adapter as a run without it), and `grun
report` plots it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from conftest import SMALL_DATA, grun

RUN = ["unlearn", "method=npo", "adapter=grun", *SMALL_DATA, "probe.max_rows=8", "train.max_steps=4",
       "train.batch_size=4", "train.grad_accum=1", "train.logging_steps=1", "eval.max_rows=6",
       "eval.max_new_tokens=8", 'target.overrides=["train.max_steps=5","extra_splits=[]","check.max_rows=0"]']
TIMING = ("wall_time_s", "eval_time_s", "reference_cache_s", "prefix_cache_s", "forget_quality_reference")


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.safetensors")))).hexdigest()


@pytest.mark.slow
def test_evaluation_along_training_leaves_training_unchanged(clean_env: dict[str, str], tmp_path: Path) -> None:
    plain, stepped = tmp_path / "plain", tmp_path / "stepped"
    for out, extra in ((plain, []), (stepped, ["eval.at_steps=[1,2,9]"])):
        r = grun(*RUN, *extra, f"hydra.run.dir={out}", env=clean_env)
        assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (stepped / "steps").iterdir()) == ["1", "2"]  # 9 is past the last step
    at = {n: json.loads((stepped / "steps" / n / "metrics.json").read_text()) for n in ("1", "2")}
    assert at["1"]["step"] == 1 and "model_utility" in at["2"] and "gate_auc" in at["2"]
    assert (stepped / "steps" / "2" / "TOFU_EVAL.json").is_file() and not list((stepped / "steps").rglob("*.safetensors"))
    assert at["1"]["forget_Q_A_Prob"] != at["2"]["forget_Q_A_Prob"]  # the model moved between them
    final = [{k: v for k, v in json.loads((d / "metrics.json").read_text()).items() if k not in TIMING}
             for d in (plain, stepped)]
    assert final[0] == final[1]
    assert _digest(plain / "adapter") == _digest(stepped / "adapter")
    r = grun("report", f"runs=[{stepped}]", f"out={tmp_path / 'report'}", env=clean_env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "report" / "steps.png").is_file()


def test_at_steps_refused_where_it_cannot_run(clean_env: dict[str, str]) -> None:
    r = grun("unlearn", "eval.at_steps=[0]", "logger=none", env=clean_env)
    assert r.returncode == 2 and "eval.at_steps=[0]: give training steps >= 1" in r.stderr
    r = grun("unlearn", "eval.at_steps=[5]", "eval.enabled=false", "logger=none", env=clean_env)
    assert r.returncode == 2 and "eval.at_steps evaluates TOFU along training" in r.stderr
