"""Full fine-tuning of a half-precision model that keeps its updates: float32 master weights.

bfloat16 has 8 bits of mantissa: at |w| ~ 0.02 one ulp is ~1.2e-4, so an AdamW update of ~lr =
1e-5 applied to a bfloat16 parameter rounds to no change (measured on SmolLM2-135M: 16 TOFU rows,
12 steps at lr 1e-5 moved 1.95% of the weights in bfloat16, all of them in float32;
tests/test_smollm2.py, its precision test). ``train.master_weights``:

- ``fp32`` (default): the trainable parameters of a bfloat16 / float16 model are kept in float32
  for training (weights, gradients and AdamW states in float32: 16 bytes per trainable
  parameter) and the forward runs under autocast in the model's own half precision. Under FSDP2
  the same thing is its mixed-precision policy over the float32 shards (parameters gathered in
  bfloat16, gradients reduced in float32). The official GRUN baselines did the same with
  DeepSpeed ZeRO-3 (bf16 compute, fp32 master weights). After training the parameters go back
  to the model's dtype, so the saved model and everything evaluated is what a user loads.
- ``none``: train the half-precision parameters as they are (half the memory), with a warning
  below lr 1e-4, where most updates round away.

Adapters that train their own small modules (GRUN's edit in float32, PEFT's LoRA matrices, which
PEFT keeps in float32) are unaffected: this applies where the model's own weights train.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from grun_cli.settings import Train

log = logging.getLogger(__name__)

#: below this lr a bfloat16 AdamW update is under half an ulp of a typical weight (|w| ~ 0.02)
ROUNDS_AWAY_BELOW_LR = 1e-4


@dataclass
class MasterWeights:
    """What was upcast (to put back after training) and the autocast dtype of the forward."""

    mode: str
    half: Any = None  # the model's half-precision dtype, None when the model is float32
    upcast: list[Any] = field(default_factory=list)
    count: int = 0  # parameter values trained in float32 instead of ``half``

    @property
    def autocast(self) -> str | None:
        """``bf16`` / ``fp16``: the TrainingArguments flag that runs the forward in half precision."""
        if not self.count:
            return None
        import torch

        return "bf16" if self.half == torch.bfloat16 else "fp16"

    def describe(self) -> dict[str, Any]:
        trained = "float32" if self.count or self.half is None else str(self.half).removeprefix("torch.")
        return {"master_weights": self.mode, "trained_dtype": trained}

    def restore(self) -> None:
        """The trained parameters back in the model's own dtype (for saving and evaluation)."""
        for p in self.upcast:
            p.data = p.data.to(self.half)
        self.upcast = []


def half_dtype(model: Any) -> Any:
    import torch

    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    half = dtypes & {torch.bfloat16, torch.float16}
    return next(iter(half)) if half else None


def keep_updates(model: Any, train: Train) -> MasterWeights:
    """Upcast ``model``'s trainable half-precision parameters to float32 (``train.master_weights=
    fp32``), or warn that a pure half-precision run at a small lr loses most updates."""
    import torch

    mode = train.master_weights
    half = half_dtype(model)
    result = MasterWeights(mode, half)
    if half is None:
        return result
    if mode == "none":
        lr = float(train.lr)
        if lr < ROUNDS_AWAY_BELOW_LR:
            log.warning("train.master_weights=none: training %s parameters at lr %g, where most AdamW updates round "
                        "to no change (docs/paper-scale.md, 'Precision'); train.master_weights=fp32 keeps them", half, lr)
        return result
    for p in model.parameters():
        if p.requires_grad and p.dtype == half:
            p.data = p.data.to(torch.float32)
            result.upcast.append(p)
    result.count = sum(p.numel() for p in result.upcast)
    log.info("master weights: %s trainable parameters in float32, the forward under %s autocast",
             f"{result.count:,}", str(half).removeprefix("torch."))
    return result
