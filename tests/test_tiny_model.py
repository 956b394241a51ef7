"""The locally built tiny model: deterministic build, recipe-keyed cache, from_pretrained reload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from grun_cli.config import config_dir
from grun_cli.data.synthetic import generate
from grun_cli.errors import GrunError
from grun_cli.models.loading import load_model
from grun_cli.models.template import IGNORE_INDEX, PromptTemplate
from grun_cli.models.tiny import ensure_tiny

ARCH = dict(OmegaConf.to_container(OmegaConf.load(config_dir() / "model" / "tiny.yaml"))["architecture"])
CORPUS = [t for r in generate(num_authors=30)["full"] for t in (r["question"], r["answer"])]


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_build_is_deterministic_and_cached(tmp_path: Path) -> None:
    a = ensure_tiny(ARCH, CORPUS, tmp_path / "a")
    b = ensure_tiny(ARCH, CORPUS, tmp_path / "b")
    assert a.name == b.name  # same recipe, same hash
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # reused, not rebuilt
    stamp = (a / "recipe.json").stat().st_mtime_ns
    assert ensure_tiny(ARCH, CORPUS, tmp_path / "a") == a
    assert (a / "recipe.json").stat().st_mtime_ns == stamp
    # a different recipe is a different model
    c = ensure_tiny({**ARCH, "seed": 1}, CORPUS, tmp_path / "a")
    assert c != a and not torch.equal(weights(c)["model.embed_tokens.weight"], wa["model.embed_tokens.weight"])
    assert json.loads((c / "recipe.json").read_text())["architecture"]["seed"] == 1


def test_loads_through_from_pretrained(tmp_path: Path) -> None:
    cfg = OmegaConf.load(config_dir() / "model" / "tiny.yaml")
    loaded = load_model(cfg, lambda: CORPUS, str(tmp_path))
    info = loaded.describe()
    assert info["architecture"] == "LlamaForCausalLM" and 1e6 < info["parameters"] < 5e6
    tok = loaded.tokenizer
    text = "Where was Jonas Delacroix born? In Bergen, Norway."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.pad_token_id != tok.eos_token_id
    # a checkpoint folder loads through the same path
    again = load_model({**OmegaConf.to_container(cfg), "name_or_path": loaded.source}, lambda: [], str(tmp_path))
    assert again.source == loaded.source


def test_bad_model_sources(tmp_path: Path) -> None:
    with pytest.raises(GrunError, match="does not exist"):
        load_model({"name": "hf", "name_or_path": str(tmp_path / "missing")}, lambda: [], str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GrunError, match="without config.json"):
        load_model({"name": "hf", "name_or_path": str(tmp_path / "empty")}, lambda: [], str(tmp_path))
    with pytest.raises(GrunError, match="needs model.name_or_path"):
        load_model({"name": "hf", "name_or_path": None}, lambda: [], str(tmp_path))
    with pytest.raises(GrunError, match="no text"):
        ensure_tiny(ARCH, [], tmp_path)


def test_template_masks_prompt_and_ends_with_eos(tmp_path: Path) -> None:
    tok = load_model(OmegaConf.load(config_dir() / "model" / "tiny.yaml"), lambda: CORPUS, str(tmp_path)).tokenizer
    t = PromptTemplate()
    enc = t.encode(tok, "Where was X born?", "X was born in Lyon.", max_length=256)
    p = t.prompt_ids(tok, "Where was X born?")
    assert enc["input_ids"][: len(p)] == p and p[0] == tok.bos_token_id
    assert enc["labels"][: len(p)] == [IGNORE_INDEX] * len(p)
    assert enc["labels"][len(p):] == enc["input_ids"][len(p):] and enc["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(enc["input_ids"], skip_special_tokens=True) == "Question: Where was X born?\nAnswer: X was born in Lyon."
    short = t.encode(tok, "Where was X born?", "X was born in Lyon.", max_length=len(p) + 2)
    assert len(short["input_ids"]) == len(p) + 2
    with pytest.raises(GrunError, match="raise model.max_length"):
        t.encode(tok, "Where was X born?", "X", max_length=len(p))


def _build_and_report(cache: str, started: float) -> list[str]:
    """In a child process: wait for the common start, build (or reuse) the tiny model, return
    what it logged."""
    import logging
    import time

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("grun_cli.models.tiny")
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    time.sleep(max(0.0, started - time.time()))
    ensure_tiny(ARCH, CORPUS, cache)
    return records


def test_processes_wanting_one_cache_entry_build_it_once(tmp_path: Path) -> None:
    """Two processes asking for the same uncached model at once (parallel sweep trials, test
    workers): one builds it, the other waits and reuses it — never rebuilt under a reader."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    start = time.time() + 3  # after both children have imported torch
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        logs = [f.result() for f in [pool.submit(_build_and_report, str(tmp_path), start) for _ in range(2)]]
    messages = [m for lines in logs for m in lines]
    assert sum(m.startswith("tiny model: building") for m in messages) == 1, messages
    assert sum(m.startswith("tiny model: reusing") for m in messages) == 1, messages
    left = [p.name for p in (tmp_path / "tiny").iterdir() if not p.name.endswith(".lock")]
    assert len(left) == 1, left  # the model, no leftover temporary folder
