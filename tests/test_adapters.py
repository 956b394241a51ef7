"""Adapters: GRUN's gate loss and edit placement, edit-off equality, exact save/load for all
three adapters, refusal of a different base model, and the rotation surviving training."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from grun_cli.adapters import load_adapter
from grun_cli.adapters.base import base_fingerprint
from grun_cli.errors import GrunError

from conftest import new_adapter, new_method

GRUN = {"kind": "grun", "layers": [1, 2], "rank": 4, "gate": "linear", "gate_weight": 10.0}
LORA = {"kind": "lora", "rank": 4, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
FULL = {"kind": "full"}


def fresh(tiny, seed: int | None = None):
    model = copy.deepcopy(tiny.model)
    if seed is not None:
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def perturb(adapter) -> None:
    """Stand-in for training: move every trainable parameter (the rotation only off its
    Householder diagonal, which the parametrization keeps at +-1)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in adapter.model.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn_like(p) * 0.3
            if name.endswith("parametrizations.weight.original"):
                noise = noise.tril(-1)
            p.add_(noise)


IDS = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46, 47], [1, 50, 51, 52, 53, 54, 55, 56, 57]])
MASK = torch.ones_like(IDS)
POS = torch.tensor([3, 6])


def logits(model, adapter=None, positions=POS):
    with torch.no_grad():
        if adapter is None:
            return model(input_ids=IDS, attention_mask=MASK).logits
        with adapter.editing(positions):
            return adapter.model(input_ids=IDS, attention_mask=MASK).logits


def test_gate_bce_golden(tiny) -> None:
    adapter = new_adapter(fresh(tiny), GRUN)
    adapter.gate_records = [("forget", torch.tensor([[0.8], [0.5]])), ("retain", torch.tensor([[0.2], [0.5]]))]
    out = adapter.aux_loss({}, forward=None)
    bce = (2 * -math.log(0.8) + 2 * -math.log(0.5)) / 4  # forget labels 1, retain labels 0
    assert out["gate_bce"].item() == pytest.approx(bce, abs=1e-6)
    assert out["loss"].item() == pytest.approx(10 * bce, abs=1e-5)
    assert out["gate_forget"].item() == pytest.approx(0.65) and out["gate_retain"].item() == pytest.approx(0.35)
    assert adapter.gate_records == []


def test_gate_loss_runs_a_retain_forward_when_the_method_did_not(tiny) -> None:
    adapter = new_adapter(fresh(tiny), GRUN)
    calls = []

    def forward(inputs, role):
        calls.append(role)
        with adapter.editing(inputs["positions"], role=role):
            adapter.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])

    batch = {k: {"input_ids": IDS, "attention_mask": MASK, "positions": POS} for k in ("forget", "retain")}
    forward(batch["forget"], "forget")
    out = adapter.aux_loss(batch, forward)
    assert calls == ["forget", "retain"] and out["gate_bce"].requires_grad is False
    assert out["loss"].requires_grad  # trains the gate


def test_edit_changes_only_at_and_after_the_edit_position(tiny) -> None:
    model = fresh(tiny)
    plain = logits(model)
    adapter = new_adapter(model, GRUN)
    perturb(adapter)
    edited = logits(model, adapter)
    diff = (edited - plain).abs().amax(-1)
    for row, pos in enumerate(POS.tolist()):
        assert diff[row, :pos].max().item() == 0.0
        assert diff[row, pos:].min().item() > 0.0


def test_edit_off_equals_plain_model(tiny) -> None:
    for cfg in (GRUN, LORA):
        model = fresh(tiny)
        plain = logits(model)
        adapter = new_adapter(model, cfg)
        perturb(adapter)
        assert not torch.equal(logits(model, adapter), plain)
        with adapter.disabled():
            assert torch.equal(logits(model, adapter), plain)
        assert torch.equal(adapter.reference_logits({"input_ids": IDS, "attention_mask": MASK}), plain)
    # the full adapter's reference is a frozen copy of the starting weights
    model = fresh(tiny)
    plain = logits(model)
    adapter = new_adapter(model, FULL)
    adapter.prepare(needs_reference=True)
    perturb(adapter)
    assert not torch.equal(logits(model), plain)
    assert torch.equal(adapter.reference_logits({"input_ids": IDS, "attention_mask": MASK}), plain)


@pytest.mark.parametrize("cfg", [GRUN, {**GRUN, "gate": "mlp"}, LORA, FULL], ids=["grun", "grun-mlp", "lora", "full"])
def test_save_load_round_trip_is_exact(tiny, cfg, tmp_path: Path) -> None:
    model = fresh(tiny)
    base = {"source": "tiny", "fingerprint": base_fingerprint(model)}
    adapter = new_adapter(model, OmegaConf.create({**cfg, "gate_negatives": ["a prompt"]}))  # as Hydra hands it
    perturb(adapter)
    trained = logits(model, adapter)
    adapter.save(tmp_path, base)
    saved = json.loads((tmp_path / "grun_adapter.json").read_text())["config"]
    assert saved["gate_negatives"] == ["a prompt"]  # a list, not its repr
    if cfg["kind"] == "full":
        from transformers import AutoModelForCausalLM

        target = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    else:
        target = fresh(tiny)
    loaded = load_adapter(target, tmp_path)
    assert torch.equal(logits(target, loaded), trained)
    files = {p.name for p in tmp_path.iterdir()}
    if cfg["kind"] == "grun":
        assert files == {"grun_adapter.json", "grun_edits.safetensors"}
        # only the edit: its float32 parameters plus a small header
        size = (tmp_path / "grun_edits.safetensors").stat().st_size
        assert size < 4 * adapter.describe()["trainable_parameters"] + 8192


def test_loading_onto_another_base_is_refused(tiny, tmp_path: Path) -> None:
    for cfg in (GRUN, LORA):
        model = fresh(tiny)
        adapter = new_adapter(model, cfg)
        adapter.save(tmp_path / cfg["kind"], {"source": "tiny-a", "fingerprint": base_fingerprint(fresh(tiny))})
        with pytest.raises(GrunError, match="trained on base model tiny-a"):
            load_adapter(fresh(tiny, seed=5), tmp_path / cfg["kind"])


def test_bad_adapter_options(tiny) -> None:
    with pytest.raises(GrunError, match=r"adapter.layers=\[7\]: give distinct decoder blocks among 0..3"):
        new_adapter(fresh(tiny), {**GRUN, "layers": [7]})
    with pytest.raises(GrunError, match=r"adapter.layers=\[2, 2\]: give distinct decoder blocks"):
        new_adapter(fresh(tiny), {**GRUN, "layers": [2, 2]})
    with pytest.raises(GrunError, match="^adapter.layers.0=x: input should be a valid integer[^\\n]*$"):
        new_adapter(fresh(tiny), {**GRUN, "layers": ["x"]})
    assert new_adapter(fresh(tiny), {**GRUN, "layers": 3}).layers == [3]
    with pytest.raises(GrunError, match="adapter.gate=deep"):
        new_adapter(fresh(tiny), {**GRUN, "gate": "deep"})
    with pytest.raises(GrunError, match="unknown adapter 'qlora'"):
        new_adapter(fresh(tiny), {"kind": "qlora"})


def test_trainable_parameters_are_the_edit_only(tiny) -> None:
    adapter = new_adapter(fresh(tiny), GRUN)
    d, r = 128, 4
    per_layer = d * r + (r * d + r) + (d + 1)  # R, W and b, linear gate
    info = adapter.describe()
    assert info["trainable_parameters"] == 2 * per_layer
    assert info["trainable_percent"] == pytest.approx(100 * 2 * per_layer / adapter.base_parameters)
    assert all(not p.requires_grad for n, p in adapter.model.named_parameters() if "grun_edits" not in n)


def test_rotation_stays_orthonormal_under_training(tiny) -> None:
    from grun_cli.train.unlearn_trainer import AdapterAccess

    adapter = new_adapter(fresh(tiny), GRUN)
    adapter.model.train()
    # our optimizer groups: weight decay asked for, but never applied to the edit
    opt = torch.optim.AdamW(adapter.param_groups(weight_decay=0.01), lr=4e-3)
    method, access = new_method({"name": "gd", "retain_weight": 1.0}), AdapterAccess(adapter)
    labels = IDS.clone()
    labels[:, :4] = -100
    inputs = {"input_ids": IDS, "attention_mask": MASK, "labels": labels, "positions": torch.tensor([3, 3])}
    # other rows for retain: with the same rows GD's two terms cancel and no edit gets a gradient
    retain = {**inputs, "input_ids": IDS + 20, "labels": torch.where(labels < 0, labels, labels + 20)}
    before = [e.rotation().detach().clone() for e in adapter.edits.values()]
    for _ in range(20):
        loss = method.loss({"forget": inputs, "retain": retain}, access)["loss"]
        loss = loss + adapter.aux_loss({"forget": inputs, "retain": retain}, access.forward)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert adapter.orthonormality_error() < 1e-5
    for b, e in zip(before, adapter.edits.values(), strict=True):
        rot = e.rotation().detach()
        assert rot.norm().item() == pytest.approx(math.sqrt(4), rel=1e-4)  # r orthonormal columns
        assert not torch.equal(rot, b)  # and it did train
    # the pitfall this guards against: plain AdamW weight decay zeroes the rotation
    victim = new_adapter(fresh(tiny), GRUN)
    bad = torch.optim.AdamW(victim.trainable_parameters(), lr=4e-3, weight_decay=0.01)
    victim.model.train()
    out = method.loss({"forget": inputs, "retain": inputs}, AdapterAccess(victim))["loss"]
    out.backward()
    bad.step()
    assert victim.edits["1"].rotation().abs().max().item() == 0.0


def test_generation_edits_the_prompt_forward_only(tiny) -> None:
    from grun_cli.models.template import PromptTemplate
    from grun_cli.scoring.generation import greedy_answers

    adapter = new_adapter(fresh(tiny), GRUN)
    calls = []
    for edit in adapter.edits.values():
        edit.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    greedy_answers(adapter.model, tiny.tokenizer, PromptTemplate(), ["Where was X born?", "Who is Y?"],
                   max_new_tokens=6, adapter=adapter)
    assert calls == [2, 2]  # one edit per layer, in the prefill, for both rows; none while decoding


def test_edit_dtype_option(tiny) -> None:
    with pytest.raises(GrunError, match="no half-precision kernel"):
        new_adapter(fresh(tiny), {**GRUN, "dtype": "bfloat16"})
    with pytest.raises(GrunError, match="adapter.dtype=int8"):
        new_adapter(fresh(tiny), {**GRUN, "dtype": "int8"})
    adapter = new_adapter(fresh(tiny), {**GRUN, "dtype": "auto"})
    assert all(p.dtype == torch.float32 for p in adapter.trainable_parameters())
    half = fresh(tiny).to(torch.bfloat16)  # auto on a half model: the edit in float32, cast back
    adapter = new_adapter(half, {**GRUN, "dtype": "auto"})
    assert all(p.dtype == torch.float32 for p in adapter.trainable_parameters())
    ids = torch.tensor([[5, 6, 7]])
    with adapter.editing([2]):
        assert half(input_ids=ids).logits.dtype == torch.bfloat16


def test_unlearn_warmup_scales_the_method_term(tiny, tmp_path: Path) -> None:
    from transformers import TrainingArguments

    from grun_cli.train.unlearn_trainer import UnlearnTrainer

    adapter = new_adapter(fresh(tiny), GRUN)
    perturb(adapter)
    labels = IDS.clone()
    labels[:, :4] = -100
    inputs = {"input_ids": IDS, "attention_mask": MASK, "labels": labels, "positions": torch.tensor([3, 3])}
    batch = {"forget": inputs, "retain": inputs}
    method = new_method({"name": "gd"})
    trainer = UnlearnTrainer(model=adapter.model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]),
                             train_dataset=[batch], method=method, adapter=adapter, unlearn_warmup_steps=10)
    adapter.model.eval()
    with torch.no_grad():
        full = method.loss(batch, trainer.access)["loss"].item()
        aux = adapter.aux_loss(batch, trainer.access.forward)["loss"].item()
        trainer.state.global_step = 5
        assert trainer.compute_loss(adapter.model, batch).item() == pytest.approx(0.5 * full + aux, rel=1e-5)
        trainer.state.global_step = 50
        assert trainer.compute_loss(adapter.model, batch).item() == pytest.approx(full + aux, rel=1e-5)


@pytest.mark.parametrize("cfg", [GRUN, LORA], ids=["grun", "lora"])
def test_a_reloaded_adapter_can_be_trained_again(tiny, tmp_path: Path, cfg) -> None:
    """load_adapter(trainable=True): the same function as saved (GRUN's rotation through its
    orthogonal parametrization's right inverse, ~1e-7), and training moves it and keeps the
    rotation orthonormal. The default reload stays inference-only."""
    model = fresh(tiny)
    base = {"source": "tiny", "fingerprint": base_fingerprint(model)}  # before the edit is attached
    adapter = new_adapter(model, cfg)
    perturb(adapter)
    trained = logits(model, adapter)
    adapter.save(tmp_path, base)
    assert not load_adapter(fresh(tiny), tmp_path).trainable_parameters()
    target = fresh(tiny)
    loaded = load_adapter(target, tmp_path, trainable=True)
    assert torch.allclose(logits(target, loaded), trained, atol=1e-4)
    params = loaded.trainable_parameters()
    assert params and all(p.requires_grad for p in params)
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(loaded.param_groups(0.0), lr=1e-2)
    loaded.model.train()
    with loaded.editing(POS):
        out = loaded.model(input_ids=IDS, attention_mask=MASK).logits
    out.float().pow(2).mean().backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True))
    if cfg["kind"] == "grun":
        assert loaded.orthonormality_error() < 1e-5


def test_checkpoint_state_round_trip_is_exact(tiny) -> None:
    """What a checkpoint holds puts a second adapter in exactly the first one's state (GRUN: the
    parametrization's free parameter, not the computed rotation; its fixed base comes from the
    seeded initialisation, as in a resumed run)."""
    torch.manual_seed(0)
    first = new_adapter(fresh(tiny), GRUN)
    perturb(first)
    state = {k: v.clone() for k, v in first.checkpoint_state().items()}
    assert any("parametrizations.weight.original" in k for k in state)
    torch.manual_seed(0)
    second = new_adapter(fresh(tiny), GRUN)
    second.load_checkpoint_state(state)
    assert torch.equal(logits(second.model, second), logits(first.model, first))
    with pytest.raises(GrunError, match="does not fit adapter=grun"):
        second.load_checkpoint_state({k: v for k, v in list(state.items())[1:]})


def test_inference_computes_each_rotation_once_and_the_same(tiny, monkeypatch) -> None:
    """Without gradients each edit's Householder product runs once per forward (not at both
    reads of R), and the edited logits are the grad-mode ones bit for bit."""
    adapter = new_adapter(fresh(tiny), GRUN)
    with adapter.editing([3, 3]):
        trained_way = adapter.model(input_ids=IDS, attention_mask=MASK).logits.detach()
    calls = []
    product = torch.linalg.householder_product
    monkeypatch.setattr(torch.linalg, "householder_product", lambda *a: calls.append(1) or product(*a))
    with torch.no_grad(), adapter.editing([3, 3]):
        inferred = adapter.model(input_ids=IDS, attention_mask=MASK).logits
    assert len(calls) == len(GRUN["layers"])
    assert torch.equal(inferred, trained_way)


def test_full_fine_tuning_with_frozen_modules(tiny) -> None:
    """adapter.freeze=[lm_head] (the official full baselines): every weight trains but the head."""
    model = fresh(tiny)
    adapter = new_adapter(model, {**FULL, "freeze": ["lm_head"]})
    trainable = {id(p) for p in adapter.trainable_parameters()}
    head = list(model.lm_head.parameters())
    assert head and not any(id(p) in trainable for p in head)
    assert len(trainable) == len(list(model.parameters())) - len(head)
    with pytest.raises(GrunError, match="the model has no module 'head'"):
        new_adapter(fresh(tiny), {**FULL, "freeze": ["head"]})
