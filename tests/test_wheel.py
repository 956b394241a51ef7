"""An installed wheel (not the editable checkout) carries its configs and runs `grun`."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_carries_configs_and_composes(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("grun_cli-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
    assert "grun_cli/conf/finetune.yaml" in names and "grun_cli/conf/model/tiny.yaml" in names
    # lm-eval: the offline task configs, and the hook that registers `--model grun` at site root
    assert {"grun_cli/eval/lm_tasks/wmdp_bio_local.yaml", "grun_cli/eval/lm_tasks/_wmdp_template_yaml",
            "grun_cli/eval/lm_tasks/local_data.py", "grun_cli_lm_eval.pth"} <= names
    # grun sweep: the Optuna sweeper in Hydra's plugin namespace (no __init__ at its root), its config
    assert {"hydra_plugins/grun_optuna_sweeper/optuna_sweeper.py", "grun_cli/conf/tune.yaml",
            "grun_cli/conf/hydra/sweeper/grun_optuna.yaml", "grun_cli/conf/sweep/tofu_npo_grun.yaml"} <= names
    assert "hydra_plugins/__init__.py" not in names
    # Run from the unpacked wheel, ahead of the editable install, from an unrelated folder.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    probe = subprocess.run(
        [sys.executable, "-c",
         "import grun_cli, grun_cli.config as c; print(grun_cli.__file__); print(c.config_dir())"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    module_file, conf = probe.stdout.split()
    assert module_file.startswith(str(tmp_path / "site")) and conf == str(tmp_path / "site" / "grun_cli" / "conf")
    r = subprocess.run(
        [sys.executable, "-m", "grun_cli", "finetune", "model=mistral", "--cfg", "job"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "mistralai/Mistral-7B-v0.1" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "grun_cli", "sweep", "sweep=tofu_npo_grun", "--cfg", "hydra"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "hydra_plugins.grun_optuna_sweeper.optuna_sweeper.GrunOptunaSweeper" in r.stdout
