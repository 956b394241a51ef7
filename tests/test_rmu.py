"""RMU: the loss against hand-computed values, the control vectors, reading a block's (edited)
output, and the full adapter restricted to chosen modules of chosen blocks (RMU's recipe)."""

from __future__ import annotations

import copy

import pytest
import torch

from grun_cli.adapters.base import capture_block_output
from grun_cli.errors import GrunError
from grun_cli.methods.losses import control_vectors, masked_mse
from grun_cli.train.unlearn_trainer import AdapterAccess

from conftest import new_adapter, new_method


class FakeHidden:
    """ModelAccess returning given hidden states."""

    def __init__(self) -> None:
        self.layers: list[tuple[str, object]] = []

    def hidden(self, inputs, role, layer):
        self.layers.append((role, layer))
        return inputs["hidden"]

    def reference_hidden(self, inputs, layer):
        self.layers.append(("reference", layer))
        return inputs["ref_hidden"]


# d = 2. Forget row 0 (corpus 0): h = (6,8), (0,0), (9,9) with the last position padding;
# row 1 (corpus 1): h = (0,10), (1,10), (0,0). Control vectors c*u: corpus 0 -> (6,8),
# corpus 1 -> (0,10) (norm 10 = steering_coeff).
# Squared error per position, mean over d, against the row's own vector (per_corpus):
#   row 0: 0, (36+64)/2 = 50, [pad]      row 1: 0, 1/2, (0+100)/2 = 50
#   all positions (attention mask): (0 + 50 + 0 + 0.5 + 50) / 5 = 20.1
#   labels only (row 0 pos 1, row 1 pos 1 and 2): (50 + 0.5 + 50) / 3 = 33.5
# Against (6,8) for both rows (shared): row 1 -> (36+4)/2 = 20, (25+4)/2 = 14.5, 50
#   all positions: (0 + 50 + 20 + 14.5 + 50) / 5 = 26.9
# Retain: h = (1,1), reference (0,3): (1 + 4) / 2 = 2.5; times retain_weight (alpha) 100.
FORGET = {
    "hidden": torch.tensor([[[6.0, 8.0], [0.0, 0.0], [9.0, 9.0]], [[0.0, 10.0], [1.0, 10.0], [0.0, 0.0]]]),
    "attention_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
    "labels": torch.tensor([[-100, 5, -100], [-100, 5, 7]]),
    "input_ids": torch.zeros(2, 3, dtype=torch.long),
    "corpus_id": torch.tensor([0, 1]),
}
RETAIN = {
    "hidden": torch.tensor([[[1.0, 1.0]]]), "ref_hidden": torch.tensor([[[0.0, 3.0]]]),
    "attention_mask": torch.tensor([[1]]), "labels": torch.tensor([[4]]),
    "input_ids": torch.zeros(1, 1, dtype=torch.long),
}


def rmu(**cfg):
    method = new_method({"name": "rmu", "steering_coeff": 10.0, **cfg})
    method._vectors = torch.tensor([[6.0, 8.0], [0.0, 10.0]])
    return method


@pytest.mark.parametrize(("cfg", "forget"), [
    ({"positions": "all", "control": "per_corpus"}, 20.1),
    ({"positions": "labels", "control": "per_corpus"}, 33.5),
    ({"positions": "all", "control": "shared"}, 26.9),
])
def test_rmu_loss_golden(cfg, forget) -> None:
    model = FakeHidden()
    terms = rmu(layer=3, **cfg).loss({"forget": FORGET, "retain": RETAIN}, model)
    assert terms["forget_loss"].item() == pytest.approx(forget)
    assert terms["retain_loss"].item() == pytest.approx(2.5)
    assert terms["loss"].item() == pytest.approx(forget + 100 * 2.5)  # default alpha 100
    assert model.layers == [("forget", 3), ("retain", 3), ("reference", 3)]


def test_rmu_rejects_bad_settings() -> None:
    for bad in ({"positions": "some"}, {"control": "each"}, {"steering_coeff": 0}):
        with pytest.raises(GrunError):
            new_method({"name": "rmu", **bad})


def test_masked_mse_ignores_masked_positions() -> None:
    h = torch.tensor([[[1.0, 3.0], [100.0, 100.0]]])
    assert masked_mse(h, torch.zeros(1, 1, 2), torch.tensor([[1, 0]])).item() == pytest.approx(5.0)


def test_control_vectors_are_seeded_unit_directions() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = control_vectors(2, 16, 5.0, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is untouched
    b = control_vectors(2, 16, 5.0, seed=7)
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.tensor([5.0, 5.0]))
    assert (a >= 0).all()  # u ~ U[0,1)^d, as RMU's torch.rand
    assert not torch.allclose(a[0], a[1])
    assert not torch.allclose(control_vectors(1, 16, 5.0, seed=8)[0], a[0])
    # one vector or many: vector k is the same
    assert torch.equal(control_vectors(1, 16, 5.0, seed=7)[0], a[0])


def _inputs(tiny):
    ids = torch.tensor([[1, 50, 60, 70, 80], [1, 90, 91, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "positions": torch.tensor([3, 2])}


def test_capture_reads_the_edited_block_output_and_stops_there(tiny) -> None:
    model = copy.deepcopy(tiny.model)
    inputs = _inputs(tiny)
    with torch.no_grad():
        states = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       output_hidden_states=True).hidden_states
        plain = capture_block_output(model, 1, lambda: model(**{k: inputs[k] for k in ("input_ids", "attention_mask")}))
    assert torch.allclose(plain, states[2])  # block 1's output = hidden_states[2]
    adapter = new_adapter(model, {"kind": "grun", "layers": [1], "rank": 4, "gate": "linear"})
    with torch.no_grad():
        for edit in adapter.edits.values():
            edit.gate.bias.fill_(10.0)  # gate open
            edit.loreft.learned_source.bias.fill_(3.0)
    last_calls = []
    handle = model.model.layers[-1].register_forward_hook(lambda *a: last_calls.append(1))
    access = AdapterAccess(adapter)
    edited = access.hidden(inputs, "forget", None)  # None = the last edited block (1)
    handle.remove()
    assert last_calls == []  # blocks after the one read are not run
    rows = torch.arange(2)
    assert not torch.allclose(edited[rows, inputs["positions"]], plain[rows, inputs["positions"]])
    before = inputs["positions"][0]
    assert torch.allclose(edited[0, :before], plain[0, :before])  # positions before the edit unchanged
    assert torch.allclose(access.reference_hidden(inputs, None), plain)
    assert [role for role, _ in adapter.gate_records] == ["forget"]  # gates kept for the BCE


def test_full_adapter_restricted_to_modules_of_blocks(tiny) -> None:
    model = copy.deepcopy(tiny.model)
    adapter = new_adapter(model, {"kind": "full", "layers": [0, 2], "modules": ["mlp.down_proj"]})
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["model.layers.0.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"]
    assert adapter.edited_layers() == [0, 2]
    with pytest.raises(GrunError, match="matches no parameter"):
        new_adapter(copy.deepcopy(tiny.model), {"kind": "full", "layers": [0], "modules": ["mlp.nothing"]})
    with pytest.raises(GrunError, match="decoder blocks"):
        new_adapter(copy.deepcopy(tiny.model), {"kind": "full", "layers": [9], "modules": None})
    everything = new_adapter(copy.deepcopy(tiny.model), {"kind": "full"})
    assert all(p.requires_grad for p in everything.model.parameters())
    assert everything.edited_layers() == []


def test_full_reference_hidden_is_the_frozen_copy(tiny) -> None:
    model = copy.deepcopy(tiny.model)
    adapter = new_adapter(model, {"kind": "full", "layers": [1], "modules": ["mlp.down_proj"]})
    adapter.prepare(needs_reference=True)
    inputs = _inputs(tiny)
    access = AdapterAccess(adapter)
    before = access.hidden(inputs, "forget", None).detach()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.add_(0.5)
    after = access.hidden(inputs, "forget", None)
    assert not torch.allclose(after, before)
    assert torch.allclose(access.reference_hidden(inputs, None), before, atol=1e-6)


def test_reading_below_an_edited_block_runs_the_whole_forward(tiny) -> None:
    """The official GRUN code reads below its last edited block: the forward then goes on, so
    the upper block's gate is still recorded for the gate loss."""
    adapter = new_adapter(copy.deepcopy(tiny.model), {"kind": "grun", "layers": [1, 2], "rank": 4, "gate": "linear"})
    calls = []
    handle = adapter.model.model.layers[-1].register_forward_hook(lambda *a: calls.append(1))
    AdapterAccess(adapter).hidden(_inputs(tiny), "forget", 1)
    handle.remove()
    assert calls == [1]
    (_, gates), = adapter.gate_records
    assert gates.shape == (2, 2)  # both edited blocks' gates, for both rows
    full = new_adapter(copy.deepcopy(tiny.model), {"kind": "full"})
    with pytest.raises(GrunError, match="not restricted to blocks"):
        AdapterAccess(full).hidden(_inputs(tiny), "forget", None)
