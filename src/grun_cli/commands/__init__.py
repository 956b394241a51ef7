"""The registered subcommands. Only commands that really work are listed here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    config_name: str  # primary config in conf/
    target: str  # "module:function" taking the composed DictConfig
    summary: str
    example: str
    multirun: bool = False  # always a Hydra multirun (grun sweep)


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in [
        Command(
            name="finetune",
            config_name="finetune",
            target="grun_cli.commands.finetune:finetune",
            summary="fine-tune a model on a data split (makes TOFU target and retain models)",
            example="grun finetune model=tiny data=tofu split=retain",
        ),
        Command(
            name="unlearn",
            config_name="unlearn",
            target="grun_cli.commands.unlearn:unlearn",
            summary="unlearn the forget set with a method (ga gd npo simnpo idk idkdpo) "
            "through an adapter (grun lora full)",
            example="grun unlearn model=tiny method=npo adapter=grun",
        ),
        Command(
            name="eval",
            config_name="evaluate",
            target="grun_cli.commands.eval:evaluate",
            summary="TOFU metrics (forget quality, model utility, ...) of a run or a model",
            example="grun eval run=outputs/unlearn/<timestamp>",
        ),
        Command(
            name="sweep",
            config_name="tune",
            target="grun_cli.commands.sweep:trial",
            summary="hyperparameter search over grun unlearn (grid or Optuna; local, joblib or Slurm), "
            "selection rule -> best.json",
            example="grun sweep sweep=tofu_npo_grun",
            multirun=True,
        ),
        Command(
            name="report",
            config_name="report",
            target="grun_cli.commands.report:report",
            summary="paper-style tables (md, csv, tex) and plots from run folders or a sweep directory",
            example="grun report 'runs=[outputs/unlearn/*]'",
        ),
        Command(
            name="repro",
            config_name="repro",
            target="grun_cli.commands.repro:repro",
            summary="rerun the paper's tables (experiments/) from their selected configs and check the numbers "
            "and claims",
            example="grun repro tables=[tofu_forget05]",
        ),
    ]
}
