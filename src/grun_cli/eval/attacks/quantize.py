"""``quantize_8bit`` / ``quantize_4bit``: the base model's linear weights quantized and
dequantized as bitsandbytes does when a model is loaded in 8 or 4 bits (weight-only; the LM
head, embeddings and norms stay as they are, as in transformers' bitsandbytes loading), and the
model evaluated on them. Quantization is reported to bring unlearned knowledge back (Zhang et
al. 2024, "Does your LLM truly unlearn?"); the GRUN release evaluates its models in 4 and 8 bits.

- 8 bit: LLM.int8's weight format, row-wise absmax: ``q = round(127 w / max|w_row|)``,
  ``w' = q * max|w_row| / 127``.
- 4 bit: NF4 with bitsandbytes' defaults (blocks of 64 values, float32 absmax per block, no
  double quantization): each value ``w / absmax`` goes to the nearest of the 16 NF4 levels.

``backend=auto`` uses bitsandbytes' own quantize / dequantize functions where it imports (on
GPU, and on CPU with bitsandbytes >= 0.45) and the same arithmetic in plain torch otherwise
(tested equal bit for bit). Only the weights are quantized: LLM.int8's run-time quantization of
activations is not modelled. Adapter weights (GRUN's edit, LoRA's matrices) stay in their own
precision on top of the quantized base. The original weights are kept in host memory and
copied back afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any

from grun_cli.errors import GrunError
from grun_cli.eval.attacks import AttackTarget, ModelAttack, register

BACKENDS = ("auto", "torch", "bitsandbytes")
NF4_BLOCK = 64
#: bitsandbytes' NF4 levels (QLoRA, Dettmers et al. 2023, appendix E), as float32
NF4_LEVELS = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)
#: bitsandbytes dequantizes int8 by multiplying with this float32 reciprocal of 127
INV_127 = 7.874015718698502e-3


def int8_rowwise(weight: Any) -> Any:
    """LLM.int8 weight quantization, dequantized: per output row, absmax scaling to [-127, 127]."""
    import torch

    w = weight.float()
    absmax = w.abs().amax(dim=1, keepdim=True)
    q = torch.round(w * (127.0 / absmax)).clamp(-127, 127) + 0.0  # + 0.0: no -0.0 (an int8 has no sign of zero)
    q = torch.where(absmax > 0, q, torch.zeros_like(q))
    return (q * absmax * INV_127).to(weight.dtype)


def nf4_blockwise(weight: Any, block: int = NF4_BLOCK) -> Any:
    """NF4 quantization, dequantized: the flattened weight in blocks of ``block`` values, each
    scaled by its absmax and rounded to the nearest NF4 level."""
    import torch

    flat = weight.reshape(-1).float()
    n = flat.numel()
    blocks = torch.nn.functional.pad(flat, (0, (-n) % block)).view(-1, block)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    levels = torch.tensor(NF4_LEVELS, device=flat.device)
    normed = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    nearest = torch.bucketize(normed, (levels[1:] + levels[:-1]) / 2)
    return (levels[nearest] * absmax).reshape(-1)[:n].view_as(weight).to(weight.dtype)


def _bitsandbytes(bits: int) -> Any:
    """bitsandbytes' quantize-dequantize for ``bits``, or None where it does not import."""
    quiet = logging.getLogger("bitsandbytes")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # notices about optional CPU matmul kernels we do not use
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            import bitsandbytes.functional as bnb
    except Exception:  # not installed, or no backend for this machine
        return None
    finally:
        quiet.setLevel(level)
    if bits == 8:
        def dequantized(w: Any) -> Any:
            q, absmax, _ = bnb.int8_vectorwise_quant(w)
            return bnb.int8_vectorwise_dequant(q, absmax).to(w.dtype)
    else:
        def dequantized(w: Any) -> Any:
            q, state = bnb.quantize_4bit(w, blocksize=NF4_BLOCK, quant_type="nf4")
            return bnb.dequantize_4bit(q, state).to(w.dtype)
    return dequantized


def quantizer(bits: int, backend: str = "auto") -> tuple[Any, str]:
    """The function a weight goes through, and the backend that provides it."""
    if backend not in BACKENDS:
        raise GrunError(f"eval.attack_settings.quantize.backend={backend} is not one of {', '.join(BACKENDS)}")
    if backend in ("auto", "bitsandbytes"):
        found = _bitsandbytes(bits)
        if found is not None:
            return found, "bitsandbytes"
        if backend == "bitsandbytes":
            raise GrunError("eval.attack_settings.quantize.backend=bitsandbytes but bitsandbytes does not import "
                            "here; pip install 'grun-cli[quant]', or use backend=auto")
    return (int8_rowwise if bits == 8 else nf4_blockwise), "torch"


def base_linears(model: Any) -> list[tuple[str, Any]]:
    """The base model's linear layers a bitsandbytes load would quantize: every nn.Linear but
    the LM head, GRUN's edit modules and LoRA's own matrices."""
    from torch import nn

    skip = ("lm_head", "grun_edits", "lora_", "modules_to_save")
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and not any(s in name for s in skip)]


class _Quantize(ModelAttack):
    bits: int
    settings_key = "quantize"

    def problems(self, evaluation: str, adapter: str | None) -> Iterator[str]:
        yield from super().problems(evaluation, adapter)
        backend = self.settings.get("backend", "auto")
        if backend not in BACKENDS:
            yield f"eval.attack_settings.quantize.backend={backend} is not one of {', '.join(BACKENDS)}"

    @contextlib.contextmanager
    def applied(self, target: AttackTarget) -> Iterator[None]:
        import torch

        quantize, backend = quantizer(self.bits, str(self.settings.get("backend", "auto")))
        self.info = {"backend": backend}
        layers = base_linears(target.model)
        if not layers:
            raise GrunError(f"{self.name}: the model has no linear layers to quantize")
        saved = []
        try:
            with torch.no_grad():
                for _, layer in layers:
                    saved.append((layer, layer.weight.detach().to("cpu", copy=True)))
                    layer.weight.copy_(quantize(layer.weight.detach()))
            yield
        finally:
            with torch.no_grad():
                for layer, original in saved:
                    layer.weight.copy_(original.to(layer.weight.device))


@register("quantize_8bit")
class Quantize8(_Quantize):
    bits = 8


@register("quantize_4bit")
class Quantize4(_Quantize):
    bits = 4
