"""eval.attacks: the quantization arithmetic (error bounds, bitsandbytes' own values where it
imports), the model put back bit for bit, settings refused before anything loads, and through
the real CLI on a GRUN run: edit_off gives the base model's forget metrics exactly, relearning
brings forgotten answers back, quantization and prompt attacks are reported next to the rest."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from grun_cli.errors import GrunError
from grun_cli.eval.attacks import AttackTarget, attack_table, make_attacks, problems
from grun_cli.eval.attacks.quantize import (
    NF4_LEVELS,
    base_linears,
    int8_rowwise,
    nf4_blockwise,
    quantizer,
)

from conftest import SMALL_DATA, grun, new_adapter


# -- quantization arithmetic ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_rowwise_error_is_within_half_a_step_of_each_row(dtype: torch.dtype) -> None:
    w = (torch.randn(48, 96, generator=torch.Generator().manual_seed(0)) * 0.05).to(dtype)
    w[3] = 0.0  # an all-zero row stays zero (no 0/0)
    q = int8_rowwise(w)
    assert q.dtype == dtype and q.shape == w.shape and torch.equal(q[3], w[3])
    step = w.float().abs().amax(1, keepdim=True) / 127
    err = (q.float() - w.float()).abs()
    rounding = w.float().abs() * torch.finfo(dtype).eps  # the dequantized value is rounded to dtype too
    assert (err <= step / 2 * (1 + 1e-6) + rounding + 1e-12).all()
    assert err.max() > 0  # it did quantize
    levels = (q.float() / step).round()  # at most 255 levels per row
    assert all(len(torch.unique(levels[r])) <= 255 for r in range(w.shape[0]))


def test_nf4_blockwise_gives_nf4_levels_times_each_block_absmax() -> None:
    w = torch.randn(40, 100, generator=torch.Generator().manual_seed(1))  # 4000 values: a ragged last block
    q = nf4_blockwise(w)
    flat, qflat = w.reshape(-1), q.reshape(-1)
    levels = torch.tensor(NF4_LEVELS)
    half_gap = ((levels[1:] - levels[:-1]) / 2).max()
    for start in range(0, flat.numel(), 64):
        block, qblock = flat[start:start + 64], qflat[start:start + 64]
        absmax = block.abs().max()
        assert (qblock - block).abs().max() <= half_gap * absmax + 1e-6
        ratios = qblock / absmax  # every value is one of the 16 levels
        assert (ratios[:, None] - levels[None, :]).abs().min(1).values.max() < 1e-6
    assert len(torch.unique(q)) > 16  # different blocks, different scales


#: sha256 (first 16 hex digits) of bitsandbytes 0.50.2's dequantized weights (int8_vectorwise_quant /
#: _dequant, quantize_4bit / dequantize_4bit nf4 blocksize 64, on CPU) of a seeded 96 x 200 tensor:
#: the torch arithmetic must reproduce them byte for byte where bitsandbytes is not installed
BITSANDBYTES_GOLDEN = {(8, "float32"): "8208552474c7d0a7", (8, "bfloat16"): "0bcf94d05f3d8db8",
                       (8, "float16"): "2790c388d8167c64", (4, "float32"): "6b4adf215ad5e575",
                       (4, "bfloat16"): "76d849b3a29a63e7", (4, "float16"): "cb687f9ea4debb9b"}


@pytest.mark.parametrize("bits, dtype", sorted(BITSANDBYTES_GOLDEN))
def test_torch_arithmetic_gives_bitsandbytes_golden_bytes(bits: int, dtype: str) -> None:
    import hashlib

    ours, backend = quantizer(bits, "torch")
    w = torch.randn(96, 200, generator=torch.Generator().manual_seed(7)).to(getattr(torch, dtype))
    digest = hashlib.sha256(ours(w).contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
    assert backend == "torch" and digest == BITSANDBYTES_GOLDEN[(bits, dtype)]


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_torch_arithmetic_equals_bitsandbytes_dequantized_weights(bits: int, dtype: torch.dtype) -> None:
    pytest.importorskip("bitsandbytes")
    ours, _ = quantizer(bits, "torch")
    theirs, backend = quantizer(bits, "bitsandbytes")
    assert backend == "bitsandbytes"
    for shape in [(64, 128), (33, 70), (256, 512)]:
        w = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape))).to(dtype)
        mine, bnb = ours(w), theirs(w)
        assert mine.view(torch.uint8).equal(bnb.view(torch.uint8)), (bits, dtype, shape)  # bytes: -0.0 too


def test_quantize_changes_only_the_base_linears_and_puts_them_back(tiny) -> None:

    model = copy.deepcopy(tiny.model)
    adapter = new_adapter(model, {"kind": "grun", "layers": [1, 3], "rank": 2})
    with torch.no_grad():  # a non-trivial edit, to see that it is left alone
        for p in adapter.edits.parameters():
            p.add_(0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = {n for n, _ in base_linears(model)}
    assert names and not any("grun_edits" in n or "lm_head" in n for n in names)
    target = AttackTarget(model, adapter, tiny.tokenizer, None, None, 64)
    (attack,) = make_attacks(["quantize_4bit"], {"quantize": {"backend": "torch"}})
    with attack.applied(target):
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed == {f"{n}.weight" for n in names}
    assert attack.info == {"backend": "torch"}
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


class _Rows:
    """A QA source of four memorisable rows (what relearn reads)."""

    forget_split = "forget"

    def resolve(self, split: str) -> str:
        return split

    def rows(self, split: str) -> list[dict]:
        return [{"question": f"Who wrote book {i}?", "answer": f"Author number {i}", "index": i} for i in range(4)]

    def encode_for_training(self, tokenizer, template, row, max_length):
        return template.encode(tokenizer, row["question"], row["answer"], max_length)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_relearn_trains_then_puts_every_weight_back(tiny, mode: str) -> None:
    from grun_cli.models.template import PromptTemplate

    model = copy.deepcopy(tiny.model)
    adapter = new_adapter(model, {"kind": "grun", "layers": [2], "rank": 2})
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    target = AttackTarget(model, adapter, tiny.tokenizer, PromptTemplate(), _Rows(), 64)
    (attack,) = make_attacks(["relearn"], {"relearn": {"mode": mode, "steps": 6, "lr": 1e-2, "fraction": 1.0}})
    with attack.applied(target):
        with torch.no_grad():
            assert not torch.equal(model(input_ids=ids).logits, logits)
        assert all(torch.equal(p, before[n][0]) for n, p in model.named_parameters() if "grun_edits" in n)
    assert attack.info["rows"] == 4 and attack.info["loss_after"] < attack.info["loss_before"]
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n][0]) and p.requires_grad == before[n][1] and p.grad is None, n
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, logits)


# -- settings -------------------------------------------------------------------------------------
@pytest.mark.parametrize("names, settings, evaluation, adapter, message", [
    (["jailbreak"], {}, "tofu", "grun", "eval.attacks=['jailbreak']: known attacks are"),
    (["relearn", "relearn"], {}, "tofu", "grun", "names an attack twice"),
    (["edit_off"], {}, "tofu", "full", "edit_off needs a run trained with adapter=grun or lora, not adapter=full"),
    (["edit_off"], {}, "tofu", None, "not a plain model (no adapter)"),
    (["paraphrase"], {}, "lm_eval", "grun", "paraphrase is an attack for eval.kind tofu, not lm_eval"),
    (["relearn"], {"relearn": {"mode": "qlora"}}, "tofu", "lora", "relearn.mode=qlora is not one of lora, full"),
    (["relearn"], {"relearn": {"steps": 0}}, "tofu", "lora", "relearn.steps=0: give a whole number >= 1"),
    (["relearn"], {"relearn": {"fraction": 1.5}}, "tofu", "lora", "relearn.fraction=1.5"),
    (["relearn"], {"relearn": {"data": "paraphrased"}}, "lm_eval", "grun", "data=paraphrased needs QA data"),
    (["relearn"], {"relearn": {"step": 5}}, "tofu", "grun", "relearn has unknown keys ['step']"),
    (["quantize_8bit"], {"quantize": {"backend": "gptq"}}, "tofu", "grun", "quantize.backend=gptq"),
    (["prompt_format"], {"prompt_format": {"shots": -1}}, "tofu", "grun", "prompt_format.shots=-1"),
])
def test_attack_settings_problems(names, settings, evaluation, adapter, message) -> None:
    found = problems(names, settings, evaluation, adapter)
    assert len(found) == 1 and message in found[0], found


def test_every_attack_fits_a_grun_run_on_tofu() -> None:
    names = ["paraphrase", "prompt_format", "quantize_8bit", "quantize_4bit", "relearn", "edit_off"]
    assert problems(names, {}, "tofu", "grun") == []
    assert problems(["quantize_4bit", "relearn", "edit_off"], {}, "lm_eval", "lora") == []
    with pytest.raises(GrunError, match="known attacks are"):
        make_attacks(["quantize_2bit"])


def test_attack_table_puts_attacks_next_to_the_unattacked_values() -> None:
    text = attack_table({"model_utility": 0.5, "forget_Q_A_Prob": 0.1, "edit_off_forget_Q_A_Prob": 0.9,
                         "edit_off_model_utility": 0.6, "relearn_forget_Q_A_Prob": 0.7})
    lines = text.splitlines()
    assert lines[0].split() == ["attack", "forget_Q_A_Prob", "model_utility"]
    assert lines[1].split() == ["none", "0.1", "0.5"]
    assert lines[2].split() == ["edit_off", "0.9", "0.6"] and lines[3].split() == ["relearn", "0.7", "-"]
    assert attack_table({"model_utility": 0.5}) is None


def test_a_bad_attack_fails_before_anything_loads(clean_env: dict[str, str], tmp_path: Path) -> None:
    r = grun("unlearn", "adapter=full", *SMALL_DATA, "eval.attacks=[edit_off]", f"hydra.run.dir={tmp_path / 'u'}",
             env=clean_env)
    assert r.returncode == 2 and "edit_off needs a run trained with adapter=grun or lora" in r.stderr
    assert not (tmp_path / "u" / "run_card.json").exists() and "loading model" not in r.stderr


# -- through the CLI on a GRUN run ----------------------------------------------------------------
def test_attacks_on_a_grun_run(grun_gd_run, clean_env: dict[str, str], tmp_path: Path) -> None:
    out, _ = grun_gd_run
    card = json.loads((out / "run_card.json").read_text())
    common = ["eval.max_rows=8", "eval.max_new_tokens=30"]
    r = grun("eval", f"run={out}", "logger=none", *common,
             "eval.attacks=[edit_off,relearn,quantize_8bit,quantize_4bit,prompt_format]",
             f"hydra.run.dir={tmp_path / 'attacked'}", env=clean_env)
    assert r.returncode == 0, r.stderr[-4000:]
    m = json.loads((tmp_path / "attacked" / "metrics.json").read_text())
    assert "under attack" in r.stdout and "relearn" in r.stdout.split("under attack")[1]
    # edit_off: the base model's per-sample forget values, exactly
    base = grun("eval", "model=hf", f"model.name_or_path={card['base_model']['source']}", *SMALL_DATA, *common,
                f"hydra.run.dir={tmp_path / 'base'}", env=clean_env)
    assert base.returncode == 0, base.stderr[-4000:]
    off = json.loads((tmp_path / "attacked" / "attacks" / "edit_off" / "TOFU_EVAL.json").read_text())
    plain = json.loads((tmp_path / "base" / "TOFU_EVAL.json").read_text())
    for key in ("forget_Q_A_Prob", "forget_truth_ratio", "forget_Q_A_ROUGE", "retain_Q_A_Prob"):
        assert off[key] == plain[key], key
    assert m["edit_off_forget_Q_A_Prob"] > 5 * m["forget_Q_A_Prob"]  # the knowledge is still in the weights
    # relearning on half the forget rows brings the answers back
    assert m["relearn_forget_Q_A_Prob"] > 2 * m["forget_Q_A_Prob"]
    assert m["relearn_loss_after"] < m["relearn_loss_before"] and m["relearn_rows"] == 20
    # quantization moves the numbers, a little; prompt_format asks with other context
    assert m["quantize_4bit_forget_Q_A_Prob"] != m["forget_Q_A_Prob"]
    assert abs(m["quantize_8bit_forget_Q_A_Prob"] - m["forget_Q_A_Prob"]) < 0.05
    assert 0 <= m["prompt_format_gate_forget_mean"] <= 1 and "prompt_format_forget_Q_A_Prob" in m
    ask = json.loads((tmp_path / "attacked" / "TOFU_EVAL.json").read_text())
    asked = ask["prompt_format_forget_Q_A_ROUGE"]["value_by_index"]["0"]["input"]
    assert asked.count("Q: ") == 4 and asked.endswith(ask["forget_Q_A_ROUGE"]["value_by_index"]["0"]["input"])
