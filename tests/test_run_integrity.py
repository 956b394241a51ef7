"""Saved runs carry checksums (run_card.json lists every result file, grun_adapter.json the
weights): opening a run with any of its files truncated, corrupted or missing is refused in one
line naming that file, before a model loads."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import GOOD_TARGET, SMALL_DATA, cli_env, grun


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:

    out = tmp_path_factory.mktemp("integrity") / "run"
    env = cli_env(cache_dir)
    r = grun("unlearn", *SMALL_DATA, GOOD_TARGET, "train.max_steps=3", "eval.enabled=false", "probe.max_rows=8",
             f"hydra.run.dir={out}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_the_card_lists_every_result_file(small_run: Path) -> None:
    card = json.loads((small_run / "run_card.json").read_text())
    listed = set(card["files"])
    assert {"adapter/grun_edits.safetensors", "adapter/grun_adapter.json", "metrics.json", "train_log.jsonl"} <= listed
    assert not any(n.startswith((".hydra", "trainer")) or n.endswith(".log") for n in listed)
    adapter = json.loads((small_run / "adapter" / "grun_adapter.json").read_text())
    assert set(adapter["files"]) == {"grun_edits.safetensors"}


DAMAGE = ["truncate", "flip", "delete"]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    else:
        path.unlink()


def _files(run: Path) -> list[str]:
    return sorted(json.loads((run / "run_card.json").read_text())["files"])


@pytest.mark.parametrize("how", DAMAGE)
def test_every_damaged_file_is_named(small_run: Path, tmp_path: Path, how: str) -> None:
    """Each file of the run, damaged, refused by the check every opener runs (read_run_card)."""
    from grun_cli.errors import GrunError
    from grun_cli.train.run_card import read_run_card

    for name in [*_files(small_run), "run_card.json"]:
        if how == "delete" and name == "run_card.json":
            continue  # no card: not a completed run (its own message, in the error catalogue)
        run = tmp_path / name.replace("/", "_") / "run"
        shutil.copytree(small_run, run)
        _damage(run / name, how)
        with pytest.raises(GrunError) as e:
            read_run_card(run)
        assert str(run / name) in str(e.value) and "\n" not in str(e.value), (name, how, e.value)


@pytest.mark.parametrize("name, how", [("adapter/grun_edits.safetensors", "truncate"), ("metrics.json", "flip"),
                                       ("adapter/grun_adapter.json", "delete"), ("run_card.json", "truncate")])
def test_grun_eval_refuses_a_damaged_run_in_one_line(small_run: Path, clean_env: dict[str, str], tmp_path: Path,
                                                     name: str, how: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    _damage(run / name, how)
    started = time.time()
    r = grun("eval", f"run={run}", f"hydra.run.dir={tmp_path / 'eval'}", env=clean_env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(lines) == 1 and str(run / name) in lines[0], lines
    assert time.time() - started < 120  # generous for parallel test workers


def test_a_folder_from_before_checksums_still_names_a_damaged_file(small_run: Path, clean_env: dict[str, str],
                                                                    tmp_path: Path) -> None:
    run = tmp_path / "old"
    shutil.copytree(small_run, run)
    for name in ("run_card.json", "adapter/grun_adapter.json"):
        saved = json.loads((run / name).read_text())
        saved.pop("files")
        (run / name).write_text(json.dumps(saved))
    _damage(run / "adapter" / "grun_edits.safetensors", "truncate")
    r = grun("eval", f"run={run}", f"hydra.run.dir={tmp_path / 'eval'}", env=clean_env)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[-1].startswith(f"grun eval: error: {run / 'adapter' / 'grun_edits.safetensors'} is unreadable"), lines
