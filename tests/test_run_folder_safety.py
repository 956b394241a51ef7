"""Opening a shared run folder never runs code: a finetune run whose card asks for remote code,
or whose checkpoint maps model classes to a Python file beside it, is refused before anything
loads, and the planted file's side effect (a marker) never appears."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grun_cli.models.loading import custom_code

from conftest import _composer, grun

EVIL = """import pathlib
pathlib.Path({marker!r}).write_text("code from a run folder ran")
from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "llama"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
"""


def _malicious_run(tmp_path: Path, tiny, card_trusts: bool) -> tuple[Path, Path]:
    run, marker = tmp_path / "shared-run", tmp_path / "MARKER"
    ckpt = run / "checkpoint"
    copy.deepcopy(tiny.model).save_pretrained(ckpt)
    tiny.tokenizer.save_pretrained(ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (ckpt / "config.json").write_text(json.dumps(config))
    (ckpt / "evil.py").write_text(EVIL.format(marker=str(marker)))
    composer = _composer("finetune")
    cfg = next(composer)("model=tiny", "data=synthetic")
    plain = OmegaConf.to_container(cfg, resolve=False)
    next(composer, None)
    plain["model"].update(trust_remote_code=card_trusts, name_or_path=str(ckpt))
    (run / "run_card.json").write_text(json.dumps({"command": "finetune", "status": "complete",
                                                   "checkpoint": str(ckpt), "config": plain}))
    return run, marker


@pytest.mark.parametrize("card_trusts", [True, False])
def test_a_run_folder_with_code_is_refused_and_nothing_runs(clean_env: dict[str, str], tmp_path: Path, tiny,
                                                           card_trusts: bool) -> None:
    run, marker = _malicious_run(tmp_path, tiny, card_trusts)
    assert custom_code(run / "checkpoint") == ["evil"]
    started = time.time()
    r = grun("eval", f"run={run}", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}", env=clean_env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "evil.py" in r.stderr and "model.trust_remote_code=true" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists(), "code from the run folder ran"
    assert time.time() - started < 120


def test_a_card_alone_cannot_grant_remote_code(clean_env: dict[str, str], tmp_path: Path, tiny) -> None:
    run, marker = _malicious_run(tmp_path, tiny, card_trusts=True)
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    del config["auto_map"]  # a plain checkpoint; the card still asks for trust
    (run / "checkpoint" / "config.json").write_text(json.dumps(config))
    r = grun("eval", f"run={run}", "logger=none", f"hydra.run.dir={tmp_path / 'eval'}", env=clean_env)
    assert r.returncode == 2 and "run card asks for trust_remote_code" in r.stderr, r.stderr[-2000:]
    assert not marker.exists()


def test_custom_code_reads_only_local_config_files(tmp_path: Path) -> None:
    assert custom_code("meta-llama/Llama-3.1-8B") == [] and custom_code(tmp_path) == []
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": ["m.Cls", None], "AutoConfig": "c.X"}}))
    assert custom_code(tmp_path) == ["c", "m"]
    (tmp_path / "config.json").write_text("{not json")
    assert custom_code(tmp_path) == []
