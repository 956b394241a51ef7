"""Evaluating a model in the middle of other work: eval mode (no dropout) and no gradients for
the block, then the caller's own train / eval mode back, whatever happened inside.

Scoring, generation, gate read-outs, the reference and prefix caches and the step evaluation
all run on the model a trainer is still holding; leaving it in eval mode would silently turn
dropout off for the rest of training, and keeping autograd on would hold every activation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def inference_mode(model: Any, no_grad: bool = True) -> Iterator[Any]:
    """``model.eval()`` and (``no_grad``) ``torch.no_grad()`` inside; ``model.train(<as it
    was>)`` after. ``no_grad=False`` for a block that decides about gradients itself (an
    evaluation that may run a relearning attack)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield model
    finally:
        model.train(was_training)
