"""``relearn``: a few steps of fine-tuning on a little forget data, then the forget metrics
again. Knowledge that was only hidden comes back in a handful of steps; knowledge that was
removed has to be learnt anew (Hu et al. 2024, "Jogging the memory of unlearned LLMs"; Lynch et
al. 2024). The evaluated run stays as it was trained (GRUN's gated edit stays on during the
attack) and is put back exactly afterwards.

Settings (``eval.attack_settings.relearn``):
  mode: lora | full     a fresh rank-``rank`` low-rank update on every base linear layer, or
                        every base weight (adapter weights are never trained)
  steps, lr, batch_size AdamW steps on the chosen rows, cycling through them in a seeded order
  fraction              of the forget rows (spread over authors / corpora) used for relearning;
                        the evaluation still scores every forget row
  data: forget | paraphrased | retain
                        the forget answers; their paraphrases (QA data); or retain rows only
                        (does unrelated fine-tuning alone bring the knowledge back?)
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterator, Mapping
from typing import Any

from grun_cli.data.source import spread
from grun_cli.errors import GrunError
from grun_cli.eval.attacks import AttackTarget, ModelAttack, register
from grun_cli.eval.attacks.quantize import base_linears
from grun_cli.scoring.likelihood import pad_batch

log = logging.getLogger(__name__)

MODES = ("lora", "full")
DATA = ("forget", "paraphrased", "retain")
DEFAULTS: dict[str, Any] = {"mode": "lora", "steps": 20, "lr": 1e-3, "batch_size": 4, "fraction": 0.5,
                            "data": "forget", "rank": 8, "alpha": 16, "seed": 0}


class _LowRank:
    """``y += scale * (x A^T) B^T`` on the given linear layers through forward hooks (works on
    any model, a PEFT-wrapped one included); removed without a trace."""

    def __init__(self, layers: list[tuple[str, Any]], rank: int, alpha: float, generator: Any) -> None:
        import torch

        self.scale = alpha / rank
        self.params: list[Any] = []
        self.handles = []
        for _, layer in layers:
            w = layer.weight
            a = torch.empty(rank, w.shape[1], dtype=torch.float32, device=w.device)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
            a.requires_grad_(True)
            b = torch.zeros(w.shape[0], rank, dtype=torch.float32, device=w.device, requires_grad=True)
            self.params += [a, b]
            self.handles.append(layer.register_forward_hook(self._hook(a, b)))

    def _hook(self, a: Any, b: Any) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            x = args[0]
            return output + (self.scale * ((x.float() @ a.T) @ b.T)).to(output.dtype)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@register("relearn")
class Relearn(ModelAttack):
    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__({**DEFAULTS, **dict(settings or {})})

    def problems(self, evaluation: str, adapter: str | None) -> Iterator[str]:
        yield from super().problems(evaluation, adapter)
        s, where = self.settings, "eval.attack_settings.relearn"
        unknown = sorted(set(s) - set(DEFAULTS))
        if unknown:
            yield f"{where} has unknown keys {unknown}; known: {', '.join(DEFAULTS)}"
        if s["mode"] not in MODES:
            yield f"{where}.mode={s['mode']} is not one of {', '.join(MODES)}"
        if s["data"] not in DATA:
            yield f"{where}.data={s['data']} is not one of {', '.join(DATA)}"
        elif s["data"] == "paraphrased" and evaluation != "tofu":
            yield f"{where}.data=paraphrased needs QA data with paraphrased answers (TOFU); use forget or retain"
        for key in ("steps", "batch_size", "rank"):
            if not isinstance(s[key], int) or isinstance(s[key], bool) or s[key] < 1:
                yield f"{where}.{key}={s[key]!r}: give a whole number >= 1"
        if not isinstance(s["lr"], (int, float)) or not s["lr"] > 0:
            yield f"{where}.lr={s['lr']!r}: give a positive learning rate"
        if not isinstance(s["fraction"], (int, float)) or not 0 < s["fraction"] <= 1:
            yield f"{where}.fraction={s['fraction']!r}: give a fraction in (0, 1]"

    def rows(self, target: AttackTarget) -> list[dict[str, Any]]:
        """The relearning rows: a ``fraction`` of the chosen data, spread over authors / corpora."""
        source, data = target.source, self.settings["data"]
        if data == "paraphrased":
            rows = [{**r, "answer": r["paraphrased_answer"]}
                    for r in source.rows(f"{source.forget_split}_perturbed")]
        else:
            rows = source.rows(source.resolve(data))
        n = max(1, round(len(rows) * float(self.settings["fraction"])))
        return spread(rows, n) if n < len(rows) else rows

    @contextlib.contextmanager
    def applied(self, target: AttackTarget) -> Iterator[None]:
        import torch


        s = self.settings
        model, adapter = target.model, target.adapter
        rows = self.rows(target)
        feats = [target.source.encode_for_training(target.tokenizer, target.template, r, target.max_length)
                 for r in rows]
        generator = torch.Generator().manual_seed(int(s["seed"]))
        flags = [(p, p.requires_grad) for p in model.parameters()]
        model.requires_grad_(False)  # only the attack's parameters learn (never the adapter's)
        lowrank, saved = None, []
        if s["mode"] == "lora":
            lowrank = _LowRank(base_linears(model), int(s["rank"]), float(s["alpha"]), generator)
            params = lowrank.params
        else:
            skip = ("grun_edits", "lora_")
            params = [p for n, p in model.named_parameters() if not any(k in n for k in skip)]
            saved = [(p, p.detach().to("cpu", copy=True)) for p in params]
            for p in params:
                p.requires_grad_(True)
        was_training = model.training
        device = next(model.parameters()).device
        pad = target.tokenizer.pad_token_id

        def loss_of(picked: list[int]) -> Any:
            batch = pad_batch([feats[i] for i in picked], pad)
            positions = [feats[i]["prompt_len"] - 1 for i in picked]
            context = adapter.editing(positions) if adapter is not None else contextlib.nullcontext()
            with context:
                return model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                             labels=batch["labels"].to(device)).loss

        def mean_loss() -> float:
            """The mean of the batches' losses over every relearning row (before / after)."""
            size = 4 * int(s["batch_size"])
            with torch.no_grad():
                parts = [(loss_of(list(range(i, min(i + size, len(feats))))).item(), min(size, len(feats) - i))
                         for i in range(0, len(feats), size)]
            return sum(v * n for v, n in parts) / len(feats)

        losses = []
        try:
            optimizer = torch.optim.AdamW(params, lr=float(s["lr"]), weight_decay=0.0)
            order = random.Random(int(s["seed"]))
            queue: list[int] = []
            model.eval()  # no dropout: the attack is deterministic for a seed
            before = mean_loss()
            with torch.enable_grad():
                for _ in range(int(s["steps"])):
                    picked = []
                    while len(picked) < int(s["batch_size"]):
                        if not queue:
                            queue = list(range(len(feats)))
                            order.shuffle(queue)
                        picked.append(queue.pop())
                    loss = loss_of(picked)
                    if not torch.isfinite(loss):
                        raise GrunError(f"relearn: the loss is {loss.item()} at step {len(losses) + 1}; "
                                        "lower eval.attack_settings.relearn.lr")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    losses.append(float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            after = mean_loss()
            self.info = {"rows": len(rows), "loss_before": before, "loss_after": after}
            log.info("relearn: %d steps (%s, lr %g) on %d %s rows: their mean loss %.4f -> %.4f", len(losses),
                     s["mode"], float(s["lr"]), len(rows), s["data"], before, after)
            yield
        finally:
            if lowrank is not None:
                lowrank.remove()
            with torch.no_grad():
                for p, original in saved:
                    p.copy_(original.to(p.device))
            for p, requires_grad in flags:
                p.grad = None
                p.requires_grad_(requires_grad)
            model.train(was_training)
