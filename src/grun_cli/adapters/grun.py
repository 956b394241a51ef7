"""GRUN: a soft gate times pyreft's LoReFT edit of the residual stream at the last prompt token.

    h' = h + sigmoid(g(h)) * R^T (W h + b - R h)      R: r x d with orthonormal rows

applied to the output of the chosen decoder blocks, through forward hooks on those blocks
(pyvene's IntervenableModel is not used: it strips every forward hook on each call). The base
model is frozen; the gate is trained with BCE (forget prompts -> 1, retain prompts -> 0) over
all edited layers, added to the base method's loss.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from grun_cli.adapters.base import Adapter, decoder_layers
from grun_cli.errors import GrunError
from grun_cli.settings import GrunSettings

GATES = ("linear", "mlp")
STACK_DIR = "stack"


def _loreft_class() -> type:
    with contextlib.redirect_stdout(io.StringIO()):  # pyvene prints an nnsight notice on import
        from pyreft import LoreftIntervention
    return LoreftIntervention


def make_gate(kind: str, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(hidden, 1)
    if kind == "mlp":  # the paper's MLP gate
        return nn.Sequential(nn.Linear(hidden, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(),
                             nn.Linear(64, 1))
    raise GrunError(f"adapter.gate={kind} is not one of {', '.join(GATES)}")


class GatedLoReFT(nn.Module):
    """One layer's gated edit, computed in ``dtype`` and cast back to the model's dtype.

    float32 by default whatever the model's dtype: the rank-r edit costs nothing in float32
    and the orthogonal parametrization's Householder product has no half-precision CPU kernel."""

    def __init__(self, hidden: int, rank: int, gate: str, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dtype = dtype
        self.loreft = _loreft_class()(embed_dim=hidden, low_rank_dimension=rank, dtype=dtype).to(dtype)
        self.gate = make_gate(gate, hidden).to(dtype)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h: (n, d) hidden states at the edit positions -> (edited h, gate values (n,))."""
        x = h.to(self.dtype)
        g, delta = self.gated_parts(x)
        return (x + g.unsqueeze(-1) * delta).to(h.dtype), g

    def gated_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (n, d) in the edit's dtype -> (gate values (n,), ungated delta (n, d))."""
        g = torch.sigmoid(self.gate(x)).squeeze(-1).float()
        rotate = self.loreft.rotate_layer
        # LoreftIntervention's forward minus its input: R^T (act(W x + b) - R x)
        delta = torch.matmul(self.loreft.act_fn(self.loreft.learned_source(x)) - rotate(x), rotate.weight.T)
        return g, delta

    def rotation(self) -> torch.Tensor:
        return self.loreft.rotate_layer.weight

    def fix_rotation(self, weight: torch.Tensor) -> None:
        """Replace the orthogonal parametrization by the plain matrix (exact reload)."""
        from pyreft.interventions import LowRankRotateLayer

        plain = LowRankRotateLayer(weight.shape[0], weight.shape[1], init_orth=False)
        plain.weight = nn.Parameter(weight.detach().clone().to(self.dtype), requires_grad=False)
        self.loreft.rotate_layer = plain


def default_layers(n_layers: int) -> list[int]:
    """The paper's 20/25/31 of 32, scaled: 5/8, 25/32 and the last block."""
    return sorted({round(n_layers * 5 / 8), round(n_layers * 25 / 32), n_layers - 1})


class _Skip(nn.Module):
    """Stands in for a decoder block below a cached prefix: passes the hidden states on."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden_states


class GrunAdapter(Adapter):
    kind = "grun"

    @classmethod
    def create(cls, model: Any, settings: GrunSettings, model_layers: Sequence[int] | None = None) -> GrunAdapter:
        return cls(model, settings, layers=model_layers)

    def __init__(self, model: Any, settings: GrunSettings, layers: Sequence[int] | None = None) -> None:
        super().__init__(model, settings)
        blocks = decoder_layers(model)
        raw = settings.layers or layers or default_layers(len(blocks))
        chosen = [raw] if isinstance(raw, int) else list(raw)
        if not chosen or any(not isinstance(i, int) or not 0 <= i < len(blocks) for i in chosen) \
                or len(set(chosen)) != len(chosen):
            raise GrunError(f"adapter.layers={chosen}: give distinct decoder blocks among "
                            f"0..{len(blocks) - 1}, e.g. adapter.layers=[{len(blocks) - 1}]")
        self.layers = sorted(chosen)
        self.cfg["layers"] = self.layers
        self.rank = int(settings.rank)
        self.gate_kind = str(settings.gate)
        self.gate_weight = float(settings.gate_weight)
        hidden = int(model.config.hidden_size)
        if not 0 < self.rank <= hidden:
            raise GrunError(f"adapter.rank={self.rank} must be in 1..{hidden}")
        model.requires_grad_(False)
        first = next(model.parameters())
        device = first.device
        # auto: the model's dtype where the rotation can be computed in it, float32 for a half model
        # (half precision itself the settings refuse: the rotation has no half kernels)
        dtype = first.dtype if settings.dtype == "auto" and first.dtype in (torch.float32, torch.float64) \
            else torch.float32
        self.combine = str(settings.combine)
        self.combine_coeff = float(settings.combine_coeff)
        self.combine_bias = float(settings.combine_bias)
        self.edits = nn.ModuleDict({str(i): GatedLoReFT(hidden, self.rank, self.gate_kind, dtype)
                                    for i in self.layers}).to(device)
        # Attached so .to(), .train() and the HF Trainer see the edit as part of the model.
        model.add_module("grun_edits", self.edits)
        # Earlier forget requests' edits (sequential unlearning), frozen, oldest first; attached
        # to the model only once there is one.
        self.stack = nn.ModuleList()
        self.stack_info: list[dict[str, Any]] = []
        self._positions: torch.Tensor | None = None
        self._role: str | None = None
        self._once = False
        self._enabled = True
        self._current_on = True
        self._stack_on = True
        self.gate_records: list[tuple[str, torch.Tensor]] = []  # (role, gates (layers, batch))
        self._pending: list[torch.Tensor] = []
        self._handles = [blocks[i].register_forward_hook(self._hook(i)) for i in self.layers]
        self._handles.append(model.register_forward_hook(self._after_forward))

    # -- hooks ---------------------------------------------------------------------------
    def _hook(self, layer: int):
        key = str(layer)

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if not self._enabled or self._positions is None:
                return output
            edits = ([frozen[key] for frozen in self.stack] if self._stack_on else []) + \
                ([self.edits[key]] if self._current_on else [])
            if not edits:
                return output
            h = output[0] if isinstance(output, tuple) else output
            rows = torch.arange(h.shape[0], device=h.device)
            pos = self._positions.to(h.device)
            # Without gradients, R's Householder product once per edit, not at each of its two
            # reads (a cuSOLVER call on CUDA); training keeps both reads, so its gradients (and
            # every trained edit) stay bit-identical to earlier releases'.
            with contextlib.nullcontext() if torch.is_grad_enabled() else parametrize.cached():
                new, g = self._apply(edits, h[rows, pos])
            h = h.index_put((rows, pos), new)
            if self._role is not None and g is not None:
                self._pending.append(g)
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    def _apply(self, edits: list[GatedLoReFT], h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The active edits on h (n, d) -> (edited h, the gate values to record). One edit: its
        own arithmetic (a one-request stack is the single run exactly). Several: h plus
        ``combine_scale`` times the sum of their gated deltas, each read from the same h. The
        gate recorded is the trained edit's for training roles (its BCE), and for diagnostics the
        largest gate of the stack (whether any edit opens on the prompt)."""
        if len(edits) == 1:
            new, g = edits[0](h)
            return new, (g if self._current_on or self._role == "diagnostics" else None)
        x = h.to(edits[0].dtype)
        parts = [edit.gated_parts(x) for edit in edits]
        total = parts[0][0].unsqueeze(-1) * parts[0][1]
        for g, delta in parts[1:]:
            total = total + g.unsqueeze(-1) * delta
        new = (x + self.combine_scale(len(edits)) * total).to(h.dtype)
        if self._role == "diagnostics":
            return new, torch.stack([g for g, _ in parts]).amax(0)
        return new, (parts[-1][0] if self._current_on else None)

    def combine_scale(self, active: int) -> float:
        """The factor on the summed gated deltas of ``active`` edits: 1 for ``combine=sum``; the
        official release's ``coeff * active + bias`` (GatedLoreftIntervention_MultipleGate,
        0.6 and 0.6 by default) for ``combine=official`` once two or more edits are stacked."""
        if self.combine == "official" and active >= 2:
            return self.combine_coeff * active + self.combine_bias
        return 1.0

    def _flush(self) -> None:
        if self._pending:
            self.gate_records.append((self._role or "", torch.stack(self._pending)))
            self._pending = []

    def _after_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        self._flush()
        if self._once:  # generation: edit the prompt's forward only, not the decoding steps
            self._positions = None

    # -- Adapter API ---------------------------------------------------------------------
    def trainable_parameters(self) -> list[Any]:
        return [p for p in self.edits.parameters() if p.requires_grad]

    def edited_layers(self) -> list[int]:
        return self.layers

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        # Weight decay would shrink the rotation's Householder diagonal, which the
        # parametrization rounds through .int(): R silently collapses to zero. Never decay it.
        return [{"params": self.trainable_parameters(), "weight_decay": 0.0}]

    @contextlib.contextmanager
    def editing(self, positions: Any, role: str | None = None, once: bool = False) -> Iterator[None]:
        saved = (self._positions, self._role, self._once)
        # on the edits' device once, not a host-to-device copy (and sync) in every edited block
        self._positions = torch.as_tensor(positions, dtype=torch.long, device=next(self.edits.parameters()).device)
        self._role, self._once = role, once
        try:
            yield
        finally:
            self._flush()  # a forward stopped early (capture_block_output) skips _after_forward
            self._positions, self._role, self._once = saved

    def prefix_block(self) -> int | None:
        """The block whose output is GRUN's frozen prefix (the one below the lowest edited
        block; None when block 0 is edited: there is nothing below it to skip)."""
        return self.layers[0] - 1 if self.layers[0] > 0 else None

    @contextlib.contextmanager
    def from_prefix(self, prefix: torch.Tensor) -> Iterator[None]:
        """Forwards in this context start from ``prefix`` (batch x tokens x hidden: the output of
        ``prefix_block()`` for these inputs): the blocks below the lowest edited one are skipped
        and that block reads the prefix. Everything else (embeddings' shape, position ids, the
        causal and padding mask, rotary embeddings) is the model's own forward, unchanged."""
        first = self.layers[0]
        blocks = decoder_layers(self.model)
        saved = [blocks[i] for i in range(first)]

        def feed(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            current = args[0] if args else kwargs["hidden_states"]
            value = prefix.to(device=current.device, dtype=current.dtype)
            if args:
                return (value, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": value}

        handle = blocks[first].register_forward_pre_hook(feed, with_kwargs=True)
        for i in range(first):
            blocks[i] = _Skip()
        try:
            yield
        finally:
            handle.remove()
            for i, block in enumerate(saved):
                blocks[i] = block

    @property
    def enabled(self) -> bool:
        """False inside ``disabled()``: the edit and its gate are off."""
        return self._enabled

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Every edit off, the stacked ones too: the frozen base model."""
        saved = self._enabled
        self._enabled = False
        try:
            yield
        finally:
            self._enabled = saved

    @contextlib.contextmanager
    def current_off(self) -> Iterator[None]:
        """Only the edit being trained off: the model this request starts from (the base model
        plus the earlier requests' edits)."""
        saved = self._current_on
        self._current_on = False
        try:
            yield
        finally:
            self._current_on = saved

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        """The earlier requests' edits off: the edit being trained acts alone on the base model,
        whose reference is the base model itself (``sequence.protocol=official``: each request's
        edit trained on its own, the edits combined only at inference)."""
        saved = self._stack_on
        self._stack_on = False
        try:
            yield
        finally:
            self._stack_on = saved

    def reference_model(self) -> tuple[Any, Any]:
        return self.model, (self.current_off() if len(self.stack) and self._stack_on else self.disabled())

    # -- sequential unlearning -----------------------------------------------------------
    def push_stack(self, edits: nn.ModuleDict, info: Mapping[str, Any]) -> None:
        """Add an earlier request's edit (same layers) under the one being trained, frozen with
        its rotation as a plain matrix (exactly as saved, so a reload is bit-identical)."""
        if set(edits) != set(self.edits):
            raise GrunError(f"a stacked GRUN edit must edit the same blocks: the earlier request edits "
                            f"{sorted(int(k) for k in edits)}, this one {self.layers}; keep adapter.layers")
        for edit in edits.values():
            if not isinstance(edit.loreft.rotate_layer.weight, nn.Parameter):  # still parametrized
                edit.fix_rotation(edit.rotation())
        edits.requires_grad_(False)
        info = {**info, "file": info.get("file") or f"{STACK_DIR}/request_{len(self.stack) + 1:02d}.safetensors"}
        if not len(self.stack):
            self.model.add_module("grun_edits_stack", self.stack)
        self.stack.append(edits)
        self.stack_info.append(dict(info))
        self.cfg["stack"] = [dict(i) for i in self.stack_info]

    def detach(self) -> None:
        """Take every edit off the model (hooks and modules): the next request builds its own
        adapter on the same base model."""
        self.remove()
        for name in ("grun_edits", "grun_edits_stack"):
            if name in self.model._modules:
                del self.model._modules[name]

    def aux_loss(self, batch: Mapping[str, Any], forward: Any) -> dict[str, Any]:
        """gate_weight * BCE(gates, forget=1 / retain=0) over every edited layer."""
        if not any(role == "retain" for role, _ in self.gate_records):
            forward(batch["retain"], "retain")  # methods without a retain term (GA)
        if not any(role == "forget" for role, _ in self.gate_records):
            forward(batch["forget"], "forget")
        if "negative" in batch:  # adapter.gate_negatives: more prompts the gate must not open on
            forward(batch["negative"], "negative")
        records, self.gate_records = self.gate_records, []
        forget = torch.cat([g.flatten() for r, g in records if r == "forget"])
        retain = torch.cat([g.flatten() for r, g in records if r in ("retain", "negative")])
        gates = torch.cat([forget, retain])
        labels = torch.cat([torch.ones_like(forget), torch.zeros_like(retain)])
        bce = nn.functional.binary_cross_entropy(gates, labels)
        out = {"loss": self.gate_weight * bce, "gate_bce": bce.detach(), "gate_forget": forget.detach().mean(),
               "gate_retain": torch.cat([g.flatten() for r, g in records if r == "retain"]).detach().mean()}
        if "negative" in batch:
            out["gate_negative"] = torch.cat([g.flatten() for r, g in records if r == "negative"]).detach().mean()
        if all(g.shape[0] == len(self.layers) for _, g in records):  # per layer, for training curves
            for role in ("forget", "retain"):  # (negatives: their mean only)
                per_layer = torch.cat([g.detach().flatten(1) for r, g in records if r == role], dim=1).mean(1)
                out.update({f"gate_{role}_layer{layer}": v for layer, v in zip(self.layers, per_layer, strict=True)})
        return out

    def orthonormality_error(self) -> float:
        err = 0.0
        for edit in self.edits.values():
            r = edit.rotation().detach().float()
            err = max(err, (r.T @ r - torch.eye(r.shape[1], device=r.device)).abs().max().item())
        return err

    def save_weights(self, directory: Path) -> None:
        """grun_edits.safetensors: the edit this run trained; stack/<name>.safetensors: each
        earlier request's edit (named, with its provenance, in the config's ``stack``)."""
        from safetensors.torch import save_file

        save_file(_edit_tensors(self.edits), str(directory / "grun_edits.safetensors"))
        for info, edits in zip(self.stack_info, self.stack, strict=True):
            (directory / STACK_DIR).mkdir(exist_ok=True)
            save_file(_edit_tensors(edits), str(directory / info["file"]))

    def load_weights(self, directory: Path, trainable: bool = False) -> None:
        """Put saved edits back (the stacked ones first, frozen). Inference (default): the
        rotation as a plain matrix, exactly as saved. ``trainable``: through the orthogonal
        parametrization (its right inverse, equal to the saved rotation to float rounding,
        ~1e-7), so training can go on from it and keep the rotation orthonormal."""
        for info in self.cfg.get("stack") or []:
            edits = self._fresh_edits()
            _fill_edits(edits, _read_edits(directory, str(info["file"])), directory, trainable=False)
            self.push_stack(edits, info)
        _fill_edits(self.edits, _read_edits(directory, "grun_edits.safetensors"), directory, trainable)
        self.edits.requires_grad_(trainable)

    def _fresh_edits(self) -> nn.ModuleDict:
        first = next(iter(self.edits.values()))
        device = next(first.parameters()).device
        hidden = int(self.model.config.hidden_size)
        return nn.ModuleDict({str(i): GatedLoReFT(hidden, self.rank, self.gate_kind, first.dtype)
                              for i in self.layers}).to(device)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _edit_tensors(edits: nn.ModuleDict) -> dict[str, torch.Tensor]:
    tensors = {}
    for layer, edit in edits.items():
        tensors[f"{layer}.rotation"] = edit.rotation().detach().contiguous().cpu()
        for name, p in edit.loreft.learned_source.named_parameters():
            tensors[f"{layer}.learned_source.{name}"] = p.detach().contiguous().cpu()
        for name, p in edit.gate.named_parameters():
            tensors[f"{layer}.gate.{name}"] = p.detach().contiguous().cpu()
    return tensors


def _read_edits(directory: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = directory / name
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise GrunError(f"{path} is missing; copy the whole adapter folder again or rerun it") from None
    except Exception as e:  # a folder from before checksums: safetensors finds the damage itself
        raise GrunError(f"{path} is unreadable ({type(e).__name__}: truncated or corrupted); copy the adapter "
                        "folder again or rerun it") from None


def _fill_edits(edits: nn.ModuleDict, tensors: Mapping[str, torch.Tensor], directory: Path, trainable: bool) -> None:
    expected = {k.split(".")[0] for k in tensors}
    if expected != set(edits):
        raise GrunError(f"{directory}: adapter edits layers {sorted(expected)} but the config "
                        f"says {sorted(edits)}; the folder is inconsistent")
    for layer, edit in edits.items():
        device = next(edit.parameters()).device
        rotation = tensors[f"{layer}.rotation"].to(device)
        if trainable:
            with torch.no_grad():
                edit.loreft.rotate_layer.weight = rotation.to(edit.dtype)
        else:
            edit.fix_rotation(rotation)
        for name, p in edit.loreft.learned_source.named_parameters():
            p.data.copy_(tensors[f"{layer}.learned_source.{name}"])
        for name, p in edit.gate.named_parameters():
            p.data.copy_(tensors[f"{layer}.gate.{name}"])
