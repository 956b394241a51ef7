"""Every paper-scale TOFU cell composes to the official GRUN release's recipe without
experiment=: `grun unlearn model=<m> method=<x> adapter=<a>` against a table of the values read
from renjie3/GRUN at b59fd78 (cmd_grun.sh, cmd_baseline.sh, grun.py, baseline/forget.py;
experiments/tofu_forget05/official_comparison.md gives file and line for each)."""

from __future__ import annotations

import pytest

from grun_cli.cli import COMMANDS, data_default

MODELS = ("llama3.1", "mistral")
# What ran, by checkpoint path: the Llama-3.1 checkpoint with the MLP gate, Mistral's with the linear one.
GATE = {"llama3.1": "mlp", "mistral": "linear"}
TRAIN = {
    "grun": {"lr": 4e-3, "epochs": 40, "batch": 16, "warmup": 0, "scheduler": "linear", "weight_decay": 0.0},
    "full": {"lr": 1e-5, "epochs": 10, "batch": 32, "warmup": 0.1, "scheduler": "linear", "weight_decay": 0.01},
    "lora": {"lr": 1e-4, "epochs": 10, "batch": 32, "warmup": 0.1, "scheduler": "linear", "weight_decay": 0.01},
}
METHOD = {  # (forget weight, retain weight, reduction, pooled IDK)
    ("grun", "gd"): (1.0, 2.0, "mean", False), ("grun", "npo"): (100.0, 1.0, "mean", False),
    ("grun", "idk"): (1.0, 1.0, "mean", False),
    ("full", "gd"): (1.0, 1.0, "mean", False), ("full", "npo"): (0.1375, 1.0, "mean", False),
    ("full", "idk"): (1.0, 1.0, "mean", True),
    ("lora", "gd"): (1.0, 1.0, "sum", False), ("lora", "npo"): (0.1375, 1.0, "sum", False),
    ("lora", "idk"): (1.0, 1.0, "mean", True),
}
CELLS = [(m, x, a) for m in MODELS for a in ("grun", "full", "lora") for x in ("gd", "npo", "idk")]


@pytest.mark.parametrize(("model", "method", "adapter"), CELLS, ids=["/".join(c) for c in CELLS])
def test_cell_composes_to_the_official_recipe(unlearn_composer, model: str, method: str, adapter: str) -> None:
    overrides = [f"model={model}", f"method={method}"] + ([] if adapter == "grun" else [f"adapter={adapter}"])
    cfg = unlearn_composer(*data_default(COMMANDS["unlearn"], overrides))  # data=tofu as the CLI adds it
    t, m = cfg.train, cfg.method
    want = TRAIN[adapter]
    assert (t.lr, t.epochs, t.batch_size * t.grad_accum, t.warmup, t.scheduler, t.weight_decay) == (
        want["lr"], want["epochs"], want["batch"], want["warmup"], want["scheduler"], want["weight_decay"])
    assert t.master_weights == "fp32"  # bf16 compute with fp32 master weights (the release's ZeRO-3 bf16)
    forget, retain, reduction, pool = METHOD[(adapter, method)]
    assert (m.forget_weight, m.retain_weight, m.reduction) == (forget, retain, reduction)
    assert bool(m.get("pool", False)) == pool
    if method == "npo":
        assert m.beta == 0.1
    assert cfg.pairing == "fixed" and cfg.data.name == "tofu" and cfg.data.forget_split == "forget05"
    a = cfg.adapter
    if adapter == "grun":
        assert (list(a.layers), a.rank, a.gate, a.gate_weight) == ([20, 25, 31], 4, GATE[model], 10.0)
    elif adapter == "lora":
        assert (a.rank, a.alpha, a.dropout, a.target_modules) == (4, 32, 0.05, "all-linear")
    else:
        assert list(a.freeze) == ["lm_head"] and a.layers is None and a.modules is None


def test_the_used_by_command_is_the_official_grun_npo(unlearn_composer) -> None:
    """`grun unlearn model=llama3.1 method=npo` (the design card's command), nothing else given."""
    cfg = unlearn_composer(*data_default(COMMANDS["unlearn"], ["model=llama3.1", "method=npo"]))
    assert cfg.adapter.kind == "grun" and cfg.method.forget_weight == 100.0 and cfg.pairing == "fixed"
    assert cfg.train.lr == 4e-3 and cfg.train.epochs == 40 and cfg.adapter.gate == "mlp"


def test_tiny_and_smollm2_cells_take_no_paper_recipe(unlearn_composer) -> None:
    for model in ("tiny", "smollm2"):
        cfg = unlearn_composer(f"model={model}", "method=npo")
        assert cfg.method.forget_weight == 1.0 and cfg.pairing == "random"
