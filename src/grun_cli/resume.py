"""``resume=<run dir>``: continue a stopped `grun unlearn` / `grun finetune` run in its own folder,
with its own settings, from its newest checkpoint.

The command line is rebuilt from the folder's ``.hydra/overrides.yaml`` (YAML, read safely), so
the resumed run composes exactly the config the stopped one had. Everything that can be checked
without loading a model is checked here: the folder is a run of this command, not complete, and
holds a checkpoint whose files match their checksums (a sequence: a finished request's model or a
checkpoint of the next request, sequence/resume.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from grun_cli.errors import GrunError

RESUMABLE = ("unlearn", "finetune")
KEY = "resume="


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise GrunError(f"{path} is unreadable ({type(e).__name__}); the run folder is damaged: start the run "
                        "again") from None


def resume_overrides(command: str, overrides: Sequence[str]) -> list[str]:
    """``overrides`` unchanged without ``resume=``; with it, the stopped run's own overrides plus
    ``resume=`` and its folder as Hydra's run directory."""
    given = [o for o in overrides if o.startswith(KEY)]
    if not given:
        return list(overrides)
    if command not in RESUMABLE:
        raise GrunError(f"resume= continues a stopped run of grun {' or grun '.join(RESUMABLE)}, not grun {command}")
    value = given[-1][len(KEY):].strip().strip("'\"")
    if not value:
        raise GrunError("resume= needs the folder of the stopped run: resume=<run dir>")
    others = [o for o in overrides if not o.startswith(KEY)]
    if others:
        raise GrunError(f"resume= continues a run with the settings it started with; drop {others[0]} "
                        "(to change settings, start a new run)")
    run = Path(value).expanduser().resolve()
    if not run.is_dir():
        raise GrunError(f"resume={value}: no such folder; give the run folder printed when the run stopped")
    saved = run / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise GrunError(f"{run} is not the folder of a grun run (no .hydra/overrides.yaml); give the folder "
                        "printed when the run stopped")
    job = ((_read_yaml(run / ".hydra" / "hydra.yaml") or {}).get("hydra") or {}).get("job", {}).get("name") \
        if (run / ".hydra" / "hydra.yaml").is_file() else None
    if job and job != command:
        raise GrunError(f"{run} is a grun {job} run; resume it with grun {job} resume={run}")
    markers = [m for m in ("FAILED", "INTERRUPTED") if (run / m).is_file()]
    if (run / "run_card.json").is_file() and not markers:
        raise GrunError(f"{run} is a complete run (run_card.json); there is nothing to resume")
    from grun_cli.unlearning.sequence.resume import check_resumable, is_sequence_run

    if command == "unlearn" and is_sequence_run(run):
        check_resumable(run)  # the finished requests' model, the next request's checkpoint
    else:
        _check_checkpoint(run, command)
    original = _read_yaml(saved)
    if not isinstance(original, list) or not all(isinstance(o, str) for o in original):
        raise GrunError(f"{saved} is not a list of overrides; the run folder is damaged: start the run again")
    kept = [o for o in original if not o.startswith((KEY, "hydra."))]
    return [*kept, f"{KEY}{_quoted(run)}", f"hydra.run.dir={_quoted(run)}"]


def _check_checkpoint(run: Path, command: str) -> None:
    from grun_cli.train.manifest import latest, read_manifest

    checkpoint = latest(run)
    if checkpoint is None:
        raise GrunError(f"{run} holds no checkpoint (the run stopped before its first one; train.save_steps sets "
                        "how often they are written); start the run again")
    manifest = read_manifest(checkpoint)
    if manifest.get("command") != command:
        raise GrunError(f"the checkpoint in {checkpoint} is from grun {manifest.get('command')}, not grun {command}")
