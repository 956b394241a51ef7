"""docs/config.md is generated from conf/ and the settings schema; it must match them."""

from __future__ import annotations

from pathlib import Path

from grun_cli.config_docs import PAGE, render

REPO = Path(__file__).resolve().parents[1]


def test_config_reference_is_current() -> None:
    committed = (REPO / PAGE).read_text()
    assert committed == render(), "docs/config.md is stale: run `make docs`"


def test_config_reference_shows_defaults_and_comments() -> None:
    text = render()
    assert "| `train.master_weights` | `fp32` | fp32 / none:" in text  # a default and its comment
    assert "#### `model=smollm2`" in text and "`model_recipe=llama3.1_npo_grun`" in text
    assert "### adapter=grun" in text and "| `gate_weight` |" in text  # the schema
