"""Values of the frozen starting model computed once before training give the same losses and
gradients as computing them at every step: train.reference=cached for every method that reads
a reference and every adapter (full fine-tuning then keeps no frozen copy), and GRUN's cached
frozen prefix for GD, NPO, IDK and RMU on the tiny model and an 8-block Llama."""

from __future__ import annotations

import pytest
import torch
from test_adapters import FULL, GRUN, LORA, fresh, perturb

from grun_cli.data.synthetic import generate
from grun_cli.data.unlearn import ForgetRetainDataset, UnlearnCollator
from grun_cli.models.template import PromptTemplate
from grun_cli.train.reference_cache import (
    PREFIX,
    REF_HIDDEN,
    REF_NLL,
    cache_prefix,
    cache_references,
)
from grun_cli.train.unlearn_trainer import AdapterAccess

from conftest import new_adapter, new_method

METHODS = {
    "npo": {"name": "npo", "beta": 0.1, "retain_weight": 1.0},
    "idkdpo": {"name": "idkdpo", "beta": 0.1, "retain_weight": 1.0},
    "rmu": {"name": "rmu", "steering_coeff": 5.0, "retain_weight": 10.0, "layer": 2, "positions": "all"},
}
ADAPTERS = {"grun": GRUN, "lora": LORA, "full": FULL}
IDK = ["I don't know.", "No idea, sorry.", "That is not something I can answer."]


class _Bar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def dataset(tiny) -> ForgetRetainDataset:
    data = generate(num_authors=30)
    template = PromptTemplate()
    forget, retain = data["full"][:10], data["full"][40:52]
    return ForgetRetainDataset(forget, retain, tiny.tokenizer, template, 64, seed=3, idk_answers=IDK)


def setup(tiny, method_cfg, adapter_cfg, cached: bool):
    """A fresh model + adapter + data; the reference cached or live; then a stand-in for training."""
    method = new_method(method_cfg)
    torch.manual_seed(0)
    adapter = new_adapter(fresh(tiny), adapter_cfg)
    access = AdapterAccess(adapter)
    data = dataset(tiny)
    report = None
    if cached:
        layer = access.block(method.layer) if "hidden" in method.references.values() else None
        report = cache_references(data, method.references, adapter, layer=layer, pad_id=tiny.tokenizer.pad_token_id,
                                  batch_size=4, max_bytes=2**30, progress=lambda desc, n: _Bar())
    adapter.prepare(not cached)
    perturb(adapter)  # the reference must stay the starting model's
    batch = UnlearnCollator(tiny.tokenizer.pad_token_id)([data[i] for i in (0, 3, 5, 9)])
    return method, adapter, access, batch, report


def loss_and_grads(method, adapter, access, batch):
    adapter.model.zero_grad(set_to_none=True)
    terms = method.loss(batch, access)
    terms["loss"].backward()
    grads = {n: p.grad.detach().clone() for n, p in adapter.model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in terms.items()}, grads


@pytest.mark.parametrize("adapter_name", list(ADAPTERS))
@pytest.mark.parametrize("method_name", list(METHODS))
def test_cached_reference_equals_live(tiny, method_name: str, adapter_name: str) -> None:
    method, adapter, access, batch, report = setup(tiny, METHODS[method_name], ADAPTERS[adapter_name], cached=True)
    parts = method.references
    for part, kind in parts.items():  # the values really come from the cache
        assert (REF_NLL if kind == "nll" else REF_HIDDEN) in batch[part]
    assert set(report.values) == set(parts) and report.mode == "cached"
    if adapter_name == "full":
        assert adapter.frozen is None  # no second copy of the model
    cached_terms, cached_grads = loss_and_grads(method, adapter, access, batch)

    method, adapter, access, live_batch, _ = setup(tiny, METHODS[method_name], ADAPTERS[adapter_name], cached=False)
    assert not any(REF_NLL in b or REF_HIDDEN in b for b in live_batch.values())
    live_terms, live_grads = loss_and_grads(method, adapter, access, live_batch)

    assert cached_terms.keys() == live_terms.keys()
    for name, value in live_terms.items():
        assert cached_terms[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert cached_grads.keys() == live_grads.keys() and live_grads
    for name, grad in live_grads.items():
        # float32 summation order differs between the cached and the live pass, and its rounding
        # scales with the gradient (RMU's reach the hundreds; IDK-DPO x LoRA's ~10 differed by
        # 1.3e-5 of their largest on an AVX-512 CPU): atol relative to it. A wrong reference
        # differs by the order of the gradient itself.
        scale = max(1.0, grad.abs().max().item())
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=5e-5 * scale, msg=name)


def test_reference_values_are_the_starting_models(tiny) -> None:
    """The cached NLL of a forget row is its summed answer NLL under the model before any edit,
    whatever the row is batched with; the IDK table covers every (question, refusal) pair."""
    from grun_cli.logprobs import sequence_nll

    method = new_method(METHODS["idkdpo"])
    torch.manual_seed(0)
    adapter = new_adapter(fresh(tiny), GRUN)
    data = dataset(tiny)
    cache_references(data, method.references, adapter, layer=None, pad_id=tiny.tokenizer.pad_token_id,
                     batch_size=3, max_bytes=2**30, progress=lambda desc, n: _Bar())
    model = adapter.model
    for i in (0, 7):
        feat = data.forget[i]
        ids = torch.tensor([feat["input_ids"]])
        with torch.no_grad(), adapter.disabled():
            alone = sequence_nll(model(input_ids=ids).logits, torch.tensor([feat["labels"]]))[0]
        assert float(feat[REF_NLL]) == pytest.approx(float(alone[0]), rel=1e-5)
    assert len(data._idk) == len(data.forget) * len(IDK)
    assert all(REF_NLL in f for f in data._idk.values())


def test_activations_over_the_limit_stay_live(tiny) -> None:
    method = new_method(METHODS["rmu"])
    torch.manual_seed(0)
    adapter = new_adapter(fresh(tiny), FULL)
    data = dataset(tiny)
    report = cache_references(data, method.references, adapter, layer=2, pad_id=tiny.tokenizer.pad_token_id,
                              batch_size=4, max_bytes=1000, progress=lambda desc, n: _Bar())
    assert report.mode == "live" and "train.reference_max_gb" in report.why_live
    assert not any(REF_HIDDEN in f for f in data.retain)


PREFIX_METHODS = {
    "gd": {"name": "gd", "retain_weight": 2.0},
    "npo": METHODS["npo"],
    "idk": {"name": "idk", "retain_weight": 1.0},
    "rmu": {**METHODS["rmu"], "layer": None},  # read at the last edited block, above the prefix
}


class _Model:
    """A loaded-model stand-in: a model and the tiny tokenizer."""

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer


@pytest.fixture(scope="module")
def llama8(tiny):
    """A random-weight Llama with 8 blocks (GQA, rotary) on the tiny tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(5)
    config = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=8, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=tiny.model.config.vocab_size,
                         bos_token_id=tiny.tokenizer.bos_token_id, eos_token_id=tiny.tokenizer.eos_token_id,
                         pad_token_id=tiny.tokenizer.pad_token_id)
    return _Model(LlamaForCausalLM(config).eval(), tiny.tokenizer)


def prefix_run(base, method_cfg, layers, cached_prefix: bool):
    method = new_method(method_cfg)
    torch.manual_seed(0)
    adapter = new_adapter(fresh(base), {**GRUN, "layers": layers, "gate": "mlp"})
    access = AdapterAccess(adapter)
    data = dataset(base)
    if method.needs_reference:
        layer = access.block(method.layer) if "hidden" in method.references.values() else None
        cache_references(data, method.references, adapter, layer=layer, pad_id=base.tokenizer.pad_token_id,
                         batch_size=4, max_bytes=2**30, progress=lambda desc, n: _Bar())
    done = cache_prefix(data, adapter, "auto" if cached_prefix else False, pad_id=base.tokenizer.pad_token_id,
                        batch_size=4, max_bytes=2**30, progress=lambda desc, n: _Bar())
    assert done["prefix_cache"] == ("cached" if cached_prefix else "live")
    perturb(adapter)
    batch = UnlearnCollator(base.tokenizer.pad_token_id)([data[i] for i in (1, 4, 6, 8)])
    assert (PREFIX in batch["forget"]) == cached_prefix and (PREFIX in batch["retain"]) == cached_prefix
    adapter.model.zero_grad(set_to_none=True)
    terms = method.loss(batch, access)
    aux = adapter.aux_loss(batch, access.forward)
    (terms["loss"] + aux["loss"]).backward()
    with torch.no_grad(), adapter.editing(batch["forget"]["positions"]), access._start(batch["forget"]):
        logits = adapter.model(input_ids=batch["forget"]["input_ids"],
                               attention_mask=batch["forget"]["attention_mask"]).logits
    grads = {n: p.grad.detach().clone() for n, p in adapter.model.named_parameters() if p.grad is not None}
    values = {k: float(v.detach()) for k, v in {**terms, **aux}.items()}
    return values, grads, logits, batch["forget"]["attention_mask"].bool()


@pytest.mark.parametrize("method_name", list(PREFIX_METHODS))
@pytest.mark.parametrize("model_name, layers", [("tiny", [2, 3]), ("llama8", [3, 5, 7])])
def test_cached_prefix_equals_the_whole_forward(tiny, llama8, model_name, layers, method_name) -> None:
    base = tiny if model_name == "tiny" else llama8
    cached, cached_grads, cached_logits, mask = prefix_run(base, PREFIX_METHODS[method_name], layers, True)
    live, live_grads, live_logits, _ = prefix_run(base, PREFIX_METHODS[method_name], layers, False)
    assert cached.keys() == live.keys() and "gate_forget" in live
    for name, value in live.items():  # losses and the gates' means (forget / retain, per layer)
        assert cached[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    torch.testing.assert_close(cached_logits[mask], live_logits[mask], rtol=1e-4, atol=1e-5)
    assert cached_grads.keys() == live_grads.keys() and live_grads
    for name, grad in live_grads.items():
        # float32 rounding scales with the gradient (RMU's reach the hundreds): atol relative to it
        scale = max(1.0, grad.abs().max().item())
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_no_prefix_below_block_zero_and_over_the_limit(tiny) -> None:
    data = dataset(tiny)
    pad = tiny.tokenizer.pad_token_id
    torch.manual_seed(0)
    adapter = new_adapter(fresh(tiny), {**GRUN, "layers": [0, 3]})
    done = cache_prefix(data, adapter, "auto", pad_id=pad, batch_size=4, max_bytes=2**30, progress=lambda d, n: _Bar())
    assert done["prefix_cache"] == "live" and "below block 0" in done["prefix_cache_why"]
    adapter = new_adapter(fresh(tiny), {**GRUN, "layers": [2, 3]})
    done = cache_prefix(data, adapter, "auto", pad_id=pad, batch_size=4, max_bytes=1000, progress=lambda d, n: _Bar())
    assert done["prefix_cache"] == "live" and "adapter.cache_prefix_max_gb" in done["prefix_cache_why"]
    assert not any(PREFIX in f for f in data.forget)
