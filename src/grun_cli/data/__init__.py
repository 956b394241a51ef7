"""QA data sets (TOFU, synthetic authors) and text corpora (WMDP): loading, author subsets,
splits, encoding; ``make_source`` builds the one ``data.name`` names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grun_cli.data.source import QASource, Source
from grun_cli.registry import Registry

__all__ = ["SOURCES", "QASource", "Source", "has_answers", "make_source", "source_type"]


#: each data set's source class, imported when used; a text corpus (``data.kind: text``) of
#: any name is read by the text source
SOURCES: Registry[Source] = Registry("data set", entries={
    "tofu": "grun_cli.data.tofu:TofuSource",
    "synthetic": "grun_cli.data.synthetic:SyntheticSource",
    "wmdp": "grun_cli.data.text:TextSource",
})


def _source_name(cfg: Mapping[str, Any]) -> Any:
    """The ``SOURCES`` entry ``data`` names: a text corpus of any name is read by the text source."""
    return "wmdp" if cfg.get("kind") == "text" else cfg.get("name")


def source_type(cfg: Mapping[str, Any]) -> type[Source]:
    """The source class ``data`` names, unbuilt (its class members, e.g. ``has_answers``, before
    any data is read)."""
    return SOURCES.get(_source_name(cfg))


def has_answers(cfg: Mapping[str, Any]) -> bool:
    """Whether ``data`` holds QA pairs (TOFU's evaluation, refusals, requests of authors), from
    its config alone: the settings check asks before anything is read. An unknown data set
    counts as QA here; building it names the problem."""
    return source_type(cfg).has_answers if _source_name(cfg) in SOURCES else True


def make_source(cfg: Mapping[str, Any], data_root: str | None = None) -> Source:
    """Build the data source named by ``data.name`` (QA: tofu, synthetic; text: wmdp)."""
    return source_type(cfg)(cfg, data_root=data_root)
