"""Stacked GRUN edits (sequential unlearning): the combination arithmetic against hand-computed
values (plain sum and the official release's coefficient / bias scale), earlier edits frozen
under training, the reference of a request (earlier edits on, the new one off), and an exact
reload of a stack with its provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_adapters import GRUN, IDS, MASK, POS, fresh, logits, perturb

from grun_cli.adapters import load_adapter
from grun_cli.adapters.base import base_fingerprint
from grun_cli.errors import GrunError

from conftest import new_adapter


def stacked(tiny, combine: str = "sum", requests: int = 3, model=None):
    """A GRUN adapter with ``requests - 1`` earlier edits stacked under the current one, every
    edit moved off its initialisation (each from its own seed)."""
    model = model if model is not None else fresh(tiny)
    cfg = {**GRUN, "combine": combine}
    adapter = None
    for k in range(requests):
        torch.manual_seed(100 + k)
        new = new_adapter(model, cfg)
        perturb_seeded(new, 7 + k)
        if adapter is not None:
            for edits, info in zip(adapter.stack, adapter.stack_info, strict=True):
                new.push_stack(edits, info)
            current = adapter.edits
            adapter.detach()
            new.push_stack(current, {"request": k, "authors": [k]})
        adapter = new
    return adapter


def perturb_seeded(adapter, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter.edits.named_parameters():
            noise = torch.randn_like(p) * 0.3
            if name.endswith("parametrizations.weight.original"):
                noise = noise.tril(-1)
            p.add_(noise)


def by_hand(edit_tensors: list[dict[str, torch.Tensor]], layer: int, h: torch.Tensor, scale: float) -> torch.Tensor:
    """h + scale * sum_k sigmoid(w_k h + c_k) * R_k^T (W_k h + b_k - R_k h), from the saved tensors."""
    total = torch.zeros_like(h, dtype=torch.float64)
    x = h.double()
    for t in edit_tensors:
        r = t[f"{layer}.rotation"].double()  # (d, r): columns orthonormal
        w, b = t[f"{layer}.learned_source.weight"].double(), t[f"{layer}.learned_source.bias"].double()
        gw, gb = t[f"{layer}.gate.weight"].double(), t[f"{layer}.gate.bias"].double()
        gate = torch.sigmoid(x @ gw.T + gb)  # (n, 1)
        total += gate * ((x @ w.T + b - x @ r) @ r.T)
    return x + scale * total


@pytest.mark.parametrize(("combine", "scale"), [("sum", 1.0), ("official", 0.6 * 3 + 0.6)])
def test_combination_matches_hand_computed_values(tiny, tmp_path: Path, combine: str, scale: float) -> None:
    from grun_cli.adapters.base import capture_block_output
    from grun_cli.adapters.grun import _edit_tensors

    adapter = stacked(tiny, combine)
    assert len(adapter.stack) == 2 and adapter.combine_scale(3) == pytest.approx(scale)
    tensors = [_edit_tensors(e) for e in [*adapter.stack, adapter.edits]]
    layer = adapter.layers[0]
    model = adapter.model
    with torch.no_grad(), adapter.disabled():  # the block's own output, before any edit
        plain = capture_block_output(model, layer, lambda: model(input_ids=IDS, attention_mask=MASK))
    with torch.no_grad(), adapter.editing(POS):
        edited = capture_block_output(model, layer, lambda: model(input_ids=IDS, attention_mask=MASK))
    rows = torch.arange(len(POS))
    want = by_hand(tensors, layer, plain[rows, POS], scale)
    assert torch.allclose(edited[rows, POS].double(), want, atol=1e-5)
    other = torch.ones_like(edited[..., 0], dtype=torch.bool)
    other[rows, POS] = False
    assert torch.equal(edited[other], plain[other])  # only the edit position changes at this block


def test_one_active_edit_is_the_single_run_exactly(tiny) -> None:
    """The first request of a sequence is a plain GRUN run: one edit, its own arithmetic, even
    with combine=official (the release's scale applies to two or more edits)."""
    model = fresh(tiny)
    torch.manual_seed(100)
    single = new_adapter(model, {**GRUN, "combine": "official"})
    perturb_seeded(single, 7)
    one = logits(model, single)
    assert single.combine_scale(1) == 1.0 and single.combine_scale(2) == pytest.approx(1.8)
    single.combine = "sum"
    assert torch.equal(logits(model, single), one)


def test_earlier_edits_stay_frozen_under_training(tiny) -> None:
    adapter = stacked(tiny)
    frozen = {n: p.detach().clone() for n, p in adapter.stack.named_parameters()}
    assert frozen and not any(p.requires_grad for p in adapter.stack.parameters())
    trainable = {id(p) for p in adapter.trainable_parameters()}
    assert trainable == {id(p) for p in adapter.edits.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in adapter.stack.parameters()}
    opt = torch.optim.AdamW(adapter.trainable_parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in adapter.edits.named_parameters()}
    for _ in range(3):
        with adapter.editing(POS):
            out = adapter.model(input_ids=IDS, attention_mask=MASK).logits
        out.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(p, frozen[n]) for n, p in adapter.stack.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in adapter.edits.named_parameters())


def test_reference_is_the_model_before_this_request(tiny) -> None:
    """NPO's reference for request k is the base model plus requests 1..k-1: the current edit
    off, the stacked ones on; edit_off (``disabled``) is the base model."""
    model = fresh(tiny)
    plain = logits(model)
    adapter = stacked(tiny, requests=2, model=model)
    inputs = {"input_ids": IDS, "attention_mask": MASK}
    with torch.no_grad(), adapter.editing(POS):
        reference = adapter.reference_logits(inputs)
    with adapter.disabled():
        assert torch.equal(logits(model, adapter), plain)
    earlier = stacked(tiny, requests=1)  # the first request's edit alone: the same seeds
    assert torch.equal(reference, logits(earlier.model, earlier))
    assert not torch.equal(reference, plain) and not torch.equal(reference, logits(model, adapter))


@pytest.mark.parametrize("combine", ["sum", "official"])
def test_a_stack_saves_and_reloads_exactly(tiny, tmp_path: Path, combine: str) -> None:
    adapter = stacked(tiny, combine)
    want = logits(adapter.model, adapter)
    base = {"source": "tiny", "fingerprint": base_fingerprint(fresh(tiny))}
    adapter.save(tmp_path, base)
    saved = json.loads((tmp_path / "grun_adapter.json").read_text())
    assert [i["request"] for i in saved["config"]["stack"]] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "stack").iterdir()) == ["request_01.safetensors",
                                                                       "request_02.safetensors"]
    target = fresh(tiny)
    loaded = load_adapter(target, tmp_path)
    assert len(loaded.stack) == 2 and loaded.combine == combine
    assert torch.equal(logits(target, loaded), want)
    gates = loaded.edits.parameters()
    assert not any(p.requires_grad for p in gates) and not any(p.requires_grad for p in loaded.stack.parameters())
    with pytest.raises(GrunError, match="fingerprint"):
        load_adapter(fresh(tiny, seed=5), tmp_path)


def test_a_stacked_edit_must_edit_the_same_blocks(tiny) -> None:
    model = fresh(tiny)
    first = new_adapter(model, GRUN)
    perturb(first)
    edits = first.edits
    first.detach()
    other = new_adapter(model, {**GRUN, "layers": [2]})
    with pytest.raises(GrunError, match="same blocks"):
        other.push_stack(edits, {"request": 1})


def test_diagnostic_gates_are_the_largest_of_the_stack(tiny) -> None:
    """gate reports on a stacked model show whether any edit opens on a prompt."""
    from grun_cli.eval.gates import gate_values_for_ids

    adapter = stacked(tiny)
    prompts = [IDS[0, :4].tolist(), IDS[1, :7].tolist()]
    values = gate_values_for_ids(adapter, prompts, pad_id=0)
    each = []
    for edits in [*adapter.stack, adapter.edits]:
        with torch.no_grad(), adapter.disabled():
            from grun_cli.adapters.base import capture_block_output

            h = capture_block_output(adapter.model, adapter.layers[0],
                                     lambda: adapter.model(input_ids=IDS, attention_mask=MASK))
        each.append(torch.sigmoid(edits[str(adapter.layers[0])].gate(h[torch.arange(2), POS])).squeeze(-1))
    assert torch.allclose(values[:, 0], torch.stack(each).amax(0), atol=1e-6)


def test_official_protocol_trains_the_edit_alone_against_the_base(tiny) -> None:
    """sequence.protocol=official: inside ``alone()`` the earlier edits are off, so the forward
    is the current edit on the base model (the single run's arithmetic) and the reference is the
    base model; outside, every edit acts again."""
    model = fresh(tiny)
    plain = logits(model)
    adapter = stacked(tiny, requests=3, model=model)
    combined = logits(model, adapter)
    inputs = {"input_ids": IDS, "attention_mask": MASK}
    with adapter.alone():
        alone = logits(model, adapter)
        with torch.no_grad(), adapter.editing(POS):
            reference = adapter.reference_logits(inputs)
    assert torch.equal(reference, plain)  # NPO's reference: the base model
    single = fresh(tiny)
    torch.manual_seed(102)
    only = new_adapter(single, GRUN)
    perturb_seeded(only, 9)  # the third request's edit, built alone from the same seeds
    assert torch.allclose(alone, logits(single, only), atol=1e-6)
    assert torch.equal(logits(model, adapter), combined) and not torch.equal(alone, combined)
