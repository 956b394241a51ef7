"""Load a causal LM and its tokenizer from the Hub, a local folder, or the built tiny model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: str  # the folder or Hub id it was loaded from
    revision: str | None

    def describe(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.model.parameters())
        return {"source": self.source, "revision": self.revision, "parameters": n,
                "architecture": type(self.model).__name__,
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", "")}


def resolve_source(
    model_cfg: Mapping[str, Any], corpus: Callable[[], Sequence[str]], cache_dir: str
) -> str:
    """The folder or Hub id to load: ``name_or_path`` if set (a model with a packaged copy:
    that copy, converted, where the Hub's weights can't be had), else the built tiny model."""
    from grun_cli.models.packaged import converted_checkpoint, uses_packaged

    if uses_packaged(model_cfg):
        return str(converted_checkpoint(model_cfg, cache_dir))
    name_or_path = model_cfg.get("name_or_path")
    if name_or_path:
        p = Path(str(name_or_path)).expanduser()
        if p.exists():
            if not (p / "config.json").is_file():
                raise GrunError(
                    f"model.name_or_path={name_or_path} is a folder without config.json; point "
                    "it at a saved checkpoint (e.g. a finetune run's checkpoint/ folder)"
                )
            return str(p.resolve())
        if str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
            raise GrunError(
                f"model.name_or_path={name_or_path} does not exist; fix the path or give a Hub id"
            )
        return str(name_or_path)
    if model_cfg.get("name") == "tiny":
        from grun_cli.models.tiny import ensure_tiny

        return str(ensure_tiny(model_cfg["architecture"], corpus(), cache_dir))
    raise GrunError(
        f"model={model_cfg.get('name')} needs model.name_or_path=<Hub id or local checkpoint folder>"
    )


def resolve_device(name: str) -> str:
    """``auto`` = the GPU when there is one, else the CPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GrunError(f"model.device={name} but no CUDA device is visible; use model.device=cpu or auto")
    return name


def _torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise GrunError(f"model.dtype={name} is not one of {', '.join(DTYPES)}")
    return "auto" if name == "auto" else getattr(torch, name)


REMOTE_CODE_FIX = "if you trust that code, add model.trust_remote_code=true on the command line"


def custom_code(folder: str | Path) -> list[str]:
    """The Python modules a local checkpoint's config.json asks ``from_pretrained`` to import
    (``auto_map``): code that runs on load. Empty for a Hub id or a plain checkpoint."""
    import json

    path = Path(str(folder)).expanduser() / "config.json"
    if not path.is_file():
        return []
    try:
        auto_map = json.loads(path.read_text()).get("auto_map") or {}
    except (ValueError, AttributeError):
        return []
    names = auto_map.values() if isinstance(auto_map, dict) else []
    return sorted({str(n if isinstance(n, str) else n[0]).split(".")[0] for n in names if n})


def load_model(
    model_cfg: Mapping[str, Any],
    corpus: Callable[[], Sequence[str]],
    cache_dir: str,
) -> LoadedModel:
    """Load model + tokenizer with ``from_pretrained`` (the same path for every source).

    ``corpus`` is only called when the tiny model has to be built.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_source(model_cfg, corpus, cache_dir)
    revision = model_cfg.get("revision")
    trust = bool(model_cfg.get("trust_remote_code", False))
    dtype = _torch_dtype(str(model_cfg.get("dtype", "auto")))
    device_map = model_cfg.get("device_map") or None
    log.info("loading model %s%s (dtype %s%s)", source, f"@{revision}" if revision else "", dtype,
             f", device_map {device_map}" if device_map else "")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(
            source, revision=revision, dtype=dtype, trust_remote_code=trust,
            **({"device_map": device_map} if device_map else {}))
    except ValueError as e:  # custom code in the checkpoint, refused without trust_remote_code
        if "trust_remote_code" not in str(e):
            raise
        raise GrunError(f"the model '{source}' contains custom code that grun does not run by default; "
                        + REMOTE_CODE_FIX) from e
    except OSError as e:  # not found, gated, offline
        raise GrunError(
            f"cannot load model '{source}': {str(e).splitlines()[0]}. For a Hub model check the "
            "id, your access (`huggingface-cli login`) and the network; offline, point "
            "model.name_or_path at a local checkpoint folder"
        ) from e
    if not device_map:  # with a device map, accelerate placed every block already
        device = resolve_device(str(model_cfg.get("device") or "auto"))
        if device != "cpu":
            model.to(device)
    if tokenizer.pad_token_id is None:  # Llama/Mistral ship without a pad token
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise GrunError(f"the tokenizer of '{source}' has no eos token; answers need one")
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, revision=revision)
