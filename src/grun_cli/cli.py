"""`grun` entry point: the first argument picks the subcommand, the rest goes to Hydra unchanged."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grun_cli import __version__
from grun_cli.commands import COMMANDS, Command
from grun_cli.errors import GrunError
from grun_cli.resume import RESUMABLE

log = logging.getLogger("grun")

EXIT_USER_ERROR = 2


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        f"grun {__version__} - LLM unlearning experiments with GRUN (Gated Representation UNlearning)",
        "",
        "usage: grun <command> [key=value ...] [hydra flags: --multirun, --cfg job, --help, ...]",
        "",
        "commands:",
    ]
    for c in COMMANDS.values():
        lines.append(f"  {c.name:<{width}}  {c.summary}")
        lines.append(f"  {'':<{width}}    e.g. {c.example}")
    lines += [
        "",
        "`grun <command> --help` lists that command's config groups and options;",
        "`grun <command> --cfg job` prints the composed config without running.",
    ]
    return "\n".join(lines)


def _run_folder() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # Hydra not initialised: no run folder
        return None


def _mark_failed(message: str, marker: str = "FAILED") -> None:
    """Leave a FAILED (or INTERRUPTED) file in the run directory so a partial run never looks
    complete."""
    out = _run_folder()
    if out is None:
        return
    from grun_cli.io_utils import atomic_write_text

    atomic_write_text(out / marker, message.rstrip() + "\n")


def _clear_failed() -> None:
    """A new run in a folder that holds a failed or interrupted one: the old marker no longer
    describes it."""
    from grun_cli.interrupts import INTERRUPTED

    out = _run_folder()
    if out is not None:
        for marker in ("FAILED", INTERRUPTED):
            (out / marker).unlink(missing_ok=True)


def _log_to_files(message: str) -> None:
    """Record an error in the run's log file without repeating it on the console."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _guarded(fn: Callable[[Any], Any], command: Command) -> Callable[[Any], Any]:
    """Turn GrunError into one clear line and exit status 2; mark any failed run directory."""

    @functools.wraps(fn)
    def task(cfg: Any) -> Any:
        _clear_failed()
        try:
            return fn(cfg)
        except GrunError as e:
            _mark_failed(f"error: {e}")
            _log_to_files(f"error: {e}")
            print(f"grun {command.name}: error: {e}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (interrupts.install)
            from grun_cli.interrupts import INTERRUPTED, describe

            name, status = describe(e)
            step, checkpoint = getattr(e, "step", None), getattr(e, "checkpoint", None)
            what = f"interrupted by {name}" + (f" at step {step}" if step is not None else "")
            _mark_failed(what + (f"; checkpoint {checkpoint}" if checkpoint else ""), INTERRUPTED)
            _log_to_files(what)
            out = _run_folder()
            # only where resume= works: a stop inside grun eval's retain-model fine-tune leaves a
            # checkpoint of that fine-tune, which grun eval cannot continue (rerun it instead)
            then = (f"; {e.then}" if getattr(e, "then", None) else
                    f"; continue it with: grun {command.name} resume={out}"
                    if checkpoint and out and command.name in RESUMABLE else
                    f"; run the same grun {command.name} command again" if checkpoint and out else "")
            print(f"\ngrun {command.name}: {what}"  # on its own line, after any progress bar
                  + (f"; {out} is marked {INTERRUPTED} (not a result)" if out else "") + then, file=sys.stderr)
            raise SystemExit(status) from None
        except Exception:
            _mark_failed(traceback.format_exc())
            raise

    return task


#: commands whose data= default follows the model: synthetic authors for the tiny model (offline
#: demos and tests), the model config's `default_data` for the paper-scale models (TOFU: a real
#: model on invented authors measures nothing)
DATA_FOLLOWS_MODEL = ("unlearn", "eval", "finetune", "sweep")


def _model_default_data(model: str) -> str | None:
    from omegaconf import OmegaConf

    from grun_cli.config import config_dir

    path = config_dir() / "model" / f"{model}.yaml"
    if not path.is_file():
        return None  # Hydra names the valid options
    value = OmegaConf.load(path).get("default_data")
    return str(value) if value else None


def data_default(command: Command, overrides: Sequence[str]) -> list[str]:
    """``overrides`` with the model's ``default_data`` (data=tofu for llama3.1 / mistral) first,
    when the model has one and neither data= nor an experiment= (which brings its own data)
    nor run= (whose data is used) is given."""
    if command.name not in DATA_FOLLOWS_MODEL:
        return list(overrides)
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    model = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == "model"), None)
    if model is None or keys & {"data", "experiment", "run"}:
        return list(overrides)
    data = _model_default_data(model)
    if data is None:
        return list(overrides)
    log.info("model=%s: data=%s (its default; give data= to change it)", model, data)
    return [f"data={data}", *overrides]


def run_command(command: Command, overrides: Sequence[str]) -> Any:
    """Run one subcommand as a Hydra app with the given command-line arguments."""
    import hydra

    from grun_cli.config import config_dir
    from grun_cli.distributed import launch_overrides
    from grun_cli.resume import resume_overrides

    overrides = launch_overrides(command.name, data_default(command, resume_overrides(command.name, overrides)))
    module_name, func_name = command.target.split(":")
    fn = getattr(importlib.import_module(module_name), func_name)
    modes = {"-m", "--multirun", "-c", "--cfg", "--info", "-i", "--help", "-h", "--hydra-help", "-r", "--run",
             "--shell-completion", "-sc"}
    if command.multirun and not modes & set(overrides):  # Hydra takes one mode flag at most
        from grun_cli.compose_check import check_sweep

        check_sweep(command.config_name, [o for o in overrides if "=" in o or o.startswith("~")], command.name)
        overrides = ["--multirun", *overrides]
    if not command.multirun and not (modes - {"-c", "--cfg", "-r", "--run"}) & set(overrides):
        from grun_cli.compose_check import check_composition

        check_composition(command.config_name, [o for o in overrides if "=" in o or o.startswith("~")], command.name)
    sys.argv = [f"grun {command.name}", *overrides]
    app = hydra.main(
        version_base="1.3", config_path=str(config_dir()), config_name=command.config_name
    )(_guarded(fn, command))
    return app()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] in ("-V", "--version"):
        print(f"grun {__version__}")
        return
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(
            f"grun: error: unknown command '{name}'; choose one of: {', '.join(COMMANDS)} "
            "(see `grun --help`)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USER_ERROR)
    from grun_cli.interrupts import describe, install

    install()
    try:
        run_command(command, rest)
    except GrunError as e:  # raised before Hydra started the job (e.g. configs not found)
        for problem in getattr(e, "problems", None) or [str(e)]:  # every settings problem on its own line
            print(f"grun {name}: error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt as e:  # before or between jobs (a run's own folder is marked above)
        signame, status = describe(e)
        print(f"grun {name}: interrupted by {signame}", file=sys.stderr)
        raise SystemExit(status) from None


if __name__ == "__main__":
    main()
