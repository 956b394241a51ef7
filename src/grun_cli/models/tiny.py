"""The `tiny` model: a BPE tokenizer trained on the data set's text plus a small
randomly initialised Llama, built deterministically and cached by recipe hash.

It is saved with ``save_pretrained`` and always loaded back with ``from_pretrained``, the
same code path as Hub models, so nothing downstream special-cases it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_dir, atomic_write_json, build_lock

log = logging.getLogger(__name__)

#: Bump when the build procedure changes, so old caches are not reused.
BUILD_VERSION = 1
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>"]


def recipe(architecture: Mapping[str, Any], corpus: Sequence[str]) -> dict[str, Any]:
    """Everything that determines the built model; its hash names the cache folder."""
    corpus_hash = hashlib.sha256("\n".join(corpus).encode("utf-8")).hexdigest()
    return {"build_version": BUILD_VERSION, "architecture": dict(architecture),
            "corpus_sha256": corpus_hash, "corpus_texts": len(corpus)}


def recipe_hash(rec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16]


def train_tokenizer(corpus: Sequence[str], vocab_size: int, max_length: int):
    """Byte-level BPE (lossless round trip of any text), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def build(architecture: Mapping[str, Any], corpus: Sequence[str], out_dir: Path) -> None:
    """Train the tokenizer, initialise the model from the seed, save both to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = dict(architecture)
    tokenizer = train_tokenizer(corpus, int(arch["vocab_size"]), int(arch["max_position_embeddings"]))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=int(arch["hidden_size"]),
        intermediate_size=int(arch["intermediate_size"]),
        num_hidden_layers=int(arch["num_layers"]),
        num_attention_heads=int(arch["num_heads"]),
        num_key_value_heads=int(arch.get("num_kv_heads") or arch["num_heads"]),
        max_position_embeddings=int(arch["max_position_embeddings"]),
        rope_theta=float(arch.get("rope_theta", 10000.0)),
        tie_word_embeddings=bool(arch.get("tie_word_embeddings", False)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(arch.get("seed", 0)))
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def ensure_tiny(architecture: Mapping[str, Any], corpus: Sequence[str], cache_dir: str | Path) -> Path:
    """Return the folder of the tiny base model for this recipe, building it if needed."""
    if not corpus:
        raise GrunError("cannot build the tiny model: the data set has no text to train a tokenizer on")
    rec = recipe(architecture, corpus)
    path = Path(cache_dir).expanduser() / "tiny" / recipe_hash(rec)
    if (path / "recipe.json").is_file():
        log.info("tiny model: reusing %s", path)
        return path
    try:
        with build_lock(path):
            if (path / "recipe.json").is_file():  # another process built it while this one waited
                log.info("tiny model: reusing %s", path)
                return path
            log.info("tiny model: building %s (tokenizer + random init; cached for later runs)", path)
            with atomic_dir(path) as tmp:
                build(architecture, corpus, tmp)
                atomic_write_json(tmp / "recipe.json", rec)
    except OSError as e:
        raise GrunError(
            f"cannot write the tiny model cache at {path} ({e}); set paths.cache_dir "
            "(or GRUN_CACHE_DIR) to a writable folder"
        ) from e
    return path
