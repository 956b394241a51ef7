"""QA data sets (TOFU, synthetic authors) and text corpora (WMDP): loading, author subsets,
splits, encoding; ``make_source`` builds the one ``data.name`` names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grun_cli.data.source import QASource, Source
from grun_cli.registry import Registry

__all__ = ["SOURCES", "QASource", "Source", "make_source"]


#: each data set's source class, imported when used; a text corpus (``data.kind: text``) of
#: any name is read by the text source
SOURCES: Registry[Source] = Registry("data set", entries={
    "tofu": "grun_cli.data.tofu:TofuSource",
    "synthetic": "grun_cli.data.synthetic:SyntheticSource",
    "wmdp": "grun_cli.data.text:TextSource",
})


def make_source(cfg: Mapping[str, Any], data_root: str | None = None) -> Source:
    """Build the data source named by ``data.name`` (QA: tofu, synthetic; text: wmdp)."""
    name = "wmdp" if cfg.get("kind") == "text" else cfg.get("name")
    return SOURCES.get(name)(cfg, data_root=data_root)
