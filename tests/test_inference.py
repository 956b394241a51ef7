"""inference_mode: eval mode and no gradients inside, the caller's mode back after, even when
the block fails (a step evaluation must hand the trainer its model as it was)."""

from __future__ import annotations

import pytest
import torch

from grun_cli.inference import inference_mode


@pytest.mark.parametrize("training", [True, False])
def test_mode_back_after_the_block_and_after_an_error(training: bool) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    model.train(training)
    with inference_mode(model):
        assert not model.training and not torch.is_grad_enabled()
        assert model(torch.ones(1, 3)).grad_fn is None
    assert model.training is training and torch.is_grad_enabled()
    with pytest.raises(RuntimeError), inference_mode(model):
        raise RuntimeError("inside")
    assert model.training is training


def test_no_grad_false_leaves_gradients_to_the_block() -> None:
    model = torch.nn.Linear(3, 3).train()
    with inference_mode(model, no_grad=False):
        assert not model.training
        assert model(torch.ones(1, 3)).grad_fn is not None
    assert model.training
