"""`grun finetune`: full fine-tuning on QA pairs with the answer-only loss (the engine is
grun_cli.train.finetune): makes TOFU target models (split=full) and retain models (split=retain).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from grun_cli.commands.context import run_dir
from grun_cli.settings_check import read_settings
from grun_cli.train.finetune import run_finetune


def finetune(cfg: DictConfig) -> dict[str, Any]:
    """The `grun finetune` command: train into Hydra's run directory and report."""
    out = run_dir()
    metrics = run_finetune(cfg, read_settings(cfg, "finetune").train, out, track=True)
    if metrics:  # empty on the other ranks of a data-parallel launch: rank 0 reports
        _report(metrics, out, str(out / "checkpoint") if cfg.save_model else None)
    return metrics


def _report(metrics: dict[str, Any], out: Path, checkpoint: str | None) -> None:
    shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in metrics.items()}
    width = max(len(k) for k in shown)
    print("\n".join(f"  {k:<{width}}  {v}" for k, v in shown.items()))
    print(f"run directory: {out}")
    if checkpoint:
        print(f"checkpoint:    {checkpoint}   (use: model.name_or_path={checkpoint})")
