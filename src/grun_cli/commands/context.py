"""What a command needs from Hydra: its run directory."""

from __future__ import annotations

from pathlib import Path


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)
