"""`grun unlearn`: run a base unlearning method through an adapter (grun | lora | full).

The command composes and checks the settings (cli.py), calls the engine
(grun_cli.unlearning.run) and prints the result; what the run folder holds is said there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli.commands.context import run_dir
from grun_cli.settings_check import read_settings
from grun_cli.unlearning.run import run_unlearn


def unlearn(cfg: DictConfig) -> dict[str, Any]:
    out = run_dir()
    metrics = run_unlearn(cfg, read_settings(cfg, "unlearn"), out)
    if metrics:  # empty on the other ranks of a data-parallel launch: rank 0 reports
        _report(metrics, out)
    return metrics


def _report(metrics: dict[str, Any], out: Path) -> None:
    rows = [("", "before", "after")]
    for name in ("forget", "retain"):
        for label, key in ((f"{name} answer prob", f"{name}_answer_prob"), (f"{name} text NLL", f"{name}_text_nll")):
            if f"before_{key}" in metrics:
                rows.append((label, f"{metrics[f'before_{key}']:.4f}", f"{metrics.get(f'after_{key}', float('nan')):.4f}"))
    if len(rows) > 1:  # (a sequence reports its requests line by line instead)
        print("\n".join(f"  {a:<20} {b:>8} {c:>8}" for a, b, c in rows))
    if "gate_forget_mean" in metrics:
        print(f"  gate mean: forget {metrics['gate_forget_mean']:.3f}, retain {metrics['gate_retain_mean']:.3f}")
    print(f"  trainable parameters: {metrics['trainable_parameters']:,} "
          f"({metrics['trainable_percent']:.4f}% of the base model)")
    if "model_utility" in metrics:
        from grun_cli.eval.tofu import HEADLINE, table

        print(table({k: metrics[k] for k in HEADLINE if k in metrics}))
    if "lm_eval_seconds" in metrics:
        from grun_cli.eval.lm_eval_run import table as lm_table

        print(lm_table(metrics))
    from grun_cli.eval.attacks import attack_table

    attacks = attack_table(metrics)
    if attacks:
        print("under attack (eval.attacks; per-sample logs in attacks/<name>/):\n" + attacks)
    print(f"run directory: {out}")
    print(f"adapter:       {out / 'adapter'}")
