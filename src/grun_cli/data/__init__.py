"""QA data sets (TOFU, synthetic authors): loading, author subsets, splits, encoding."""

from grun_cli.data.source import QASource, make_source

__all__ = ["QASource", "make_source"]
