"""What every command needs first: the run directory, the plain config, seeding, threads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grun_cli.errors import GrunError

log = logging.getLogger(__name__)


def as_list(value: Any) -> list[Any]:
    """A list-valued key given as a list, a single value or nothing (``runs=a`` or ``runs=[a,b]``)."""
    from omegaconf import ListConfig

    if value is None:
        return []
    return list(value) if isinstance(value, (list, ListConfig)) else [value]


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The fully resolved config as plain containers (for run cards and W&B)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise GrunError(f"config error: {e}".replace("\n", " ")) from e


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(int(seed))
