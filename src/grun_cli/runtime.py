"""What every run needs first, whatever command starts it: the config as plain containers
(for run cards and W&B), list-valued settings, seeding."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from grun_cli.errors import GrunError


def as_list(value: Any) -> list[Any]:
    """A list-valued key given as a list, a single value or nothing (``runs=a`` or ``runs=[a,b]``)."""
    from omegaconf import ListConfig

    if value is None:
        return []
    return list(value) if isinstance(value, (list, ListConfig)) else [value]


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The fully resolved config as plain containers (for run cards and W&B)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise GrunError(f"config error: {e}".replace("\n", " ")) from e


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(int(seed))
