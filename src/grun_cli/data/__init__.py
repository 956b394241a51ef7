"""QA data sets (TOFU, synthetic authors) and text corpora (WMDP): loading, author subsets,
splits, encoding; ``make_source`` builds the one ``data.name`` names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grun_cli.data.source import QASource
from grun_cli.errors import GrunError

__all__ = ["QASource", "make_source"]


def make_source(cfg: Mapping[str, Any], data_root: str | None = None) -> Any:
    """Build the data source named by ``data.name`` (QA: tofu, synthetic; text: wmdp)."""
    name = cfg.get("name")
    if name == "wmdp" or cfg.get("kind") == "text":
        from grun_cli.data.text import TextSource

        return TextSource(cfg, data_root=data_root)
    if name == "tofu":
        from grun_cli.data.tofu import TofuSource

        return TofuSource(cfg, data_root=data_root)
    if name == "synthetic":
        from grun_cli.data.synthetic import SyntheticSource

        return SyntheticSource(cfg)
    raise GrunError(f"unknown data set '{name}'; use data=tofu, data=synthetic or data=wmdp")
