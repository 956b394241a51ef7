"""The lm-eval-harness model class ``grun``: any base model, full / LoRA fine-tune or GRUN run,
evaluated with its unlearning edit active.

    lm-eval run --model grun --model_args run=outputs/unlearn/<run> --tasks wmdp_bio --batch_size 32
    lm-eval run --model grun --model_args pretrained=meta-llama/Llama-3.1-8B --tasks mmlu

For GRUN the edit lands where training put it: on the last token of each request's context
(the last prompt token), in a batched forward with an attention mask, one forward per
distinct input (multiple-choice requests that share a context share it). Generation tasks get
the edit on the prompt's forward only, as in training.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import defaultdict
from typing import Any

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from grun_cli.scoring.likelihood import edit_context

log = logging.getLogger(__name__)

NAME = "grun"


@register_model(NAME)
class GrunLM(HFLM):
    """HFLM whose log-likelihoods go through grun's adapter.

    Give ``run=<grun unlearn run dir>``, or ``pretrained=<Hub id / folder>`` for a plain
    model, or (from Python) ``pretrained=<model>, tokenizer=<tokenizer>, adapter=<Adapter>``."""

    def __init__(self, run: str | None = None, pretrained: Any = None, adapter: Any = None,
                 tokenizer: Any = None, add_bos: bool | None = None, device: str | None = None,
                 **kwargs: Any) -> None:
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("device %s asked for (lm-eval's default) but no GPU is visible: using the CPU", device)
            device = "cpu"
        if run:
            from grun_cli.api import load_run

            loaded = load_run(run, device=device or "auto")
            pretrained, tokenizer, adapter = loaded.model, loaded.tokenizer, loaded.adapter
            add_bos = loaded.template.add_bos if add_bos is None else add_bos
        if pretrained is None:
            raise ValueError("model_args needs run=<grun unlearn run directory> or pretrained=<model>")
        if not isinstance(pretrained, str):
            kwargs.pop("dtype", None)  # an instance keeps its own device and dtype
        else:
            kwargs["device"] = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.adapter = adapter
        self.scoring_seconds = 0.0  # time spent in this class's forwards (throughput without lm-eval's setup)
        super().__init__(pretrained=pretrained, tokenizer=tokenizer, backend="causal", **kwargs)
        tok = self.tokenizer
        # grun's own models were trained with a BOS their tokenizer does not add by itself.
        probe = tok("a", add_special_tokens=True)["input_ids"]
        self._prepend_bos = bool(add_bos) and tok.bos_token_id is not None and probe[:1] != [tok.bos_token_id]

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        ids = super().tok_encode(string, add_special_tokens=add_special_tokens, **kwargs)
        if self._prepend_bos and add_special_tokens is not False and ids[:1] != [self.tokenizer.bos_token_id]:
            ids = [self.tokenizer.bos_token_id, *ids]
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_batch_encode(self, strings: list[str], padding_side: str = "left", left_truncate_len: int | None = None,
                         truncation: bool = False) -> tuple[Any, Any]:
        """Prompts for generation, left-padded; with grun's BOS where training had it."""
        if not self._prepend_bos:
            return super().tok_batch_encode(strings, padding_side=padding_side,
                                            left_truncate_len=left_truncate_len, truncation=truncation)
        rows = [self.tok_encode(s, left_truncate_len=left_truncate_len) for s in strings]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids, mask

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Perplexity: lm-eval already puts the prefix token (BOS) before each window, so the
        text itself is encoded without grun's BOS (else BOS-given-BOS would be scored)."""
        saved, self._prepend_bos = self._prepend_bos, False
        try:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        finally:
            self._prepend_bos = saved

    # -- log-likelihoods -------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, continuation is the greedy output) per request."""
        started = time.perf_counter()
        window = self.max_length
        # One forward per distinct (input, edit position); the edit goes on the last context
        # token, which is len(continuation) tokens before the input's end (left truncation too).
        groups: dict[tuple[tuple[int, ...], int], list[int]] = defaultdict(list)
        for i, (_, context, continuation) in enumerate(requests):
            if not context or not continuation:
                raise ValueError("lm-eval sent an empty context or continuation")
            if len(continuation) > window:
                raise ValueError(f"a continuation of {len(continuation)} tokens is longer than the "
                                 f"model's window ({window}); raise max_length")
            inp = tuple((context + continuation)[-(window + 1):][:-1])
            groups[(inp, max(0, len(inp) - len(continuation)))].append(i)
        # Longest inputs first: an out-of-memory batch shows at once, and batches pad little.
        keys = sorted(groups, key=lambda k: len(k[0]), reverse=True)
        batch_size = self._resolve_batch_size(requests, override_bs)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="grun loglikelihood")
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            spans = {i: (len(key[0]) - len(requests[i][2]), len(key[0])) for key in chunk for i in groups[key]}
            logits, column = self._continuation_logits(chunk, spans.values())
            for row, key in enumerate(chunk):
                for i in groups[key]:
                    cont = requests[i][2]
                    first, end = spans[i]
                    cols = [column[t] for t in range(first, end)]
                    span = torch.log_softmax(logits[row, cols].float(), dim=-1)
                    target = torch.tensor(cont, device=span.device)
                    total = span.gather(-1, target[:, None]).sum().item()
                    greedy = bool((span.argmax(-1) == target).all())
                    results[i] = (total, greedy)
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
                    bar.update(1)
        bar.close()
        self.scoring_seconds += time.perf_counter() - started
        return results  # type: ignore[return-value]

    def _continuation_logits(self, chunk: list[tuple[tuple[int, ...], int]], spans: Any) -> tuple[Any, dict[int, int]]:
        """Logits of one right-padded batch (attention-masked, edit at each row's position),
        computed only at the positions some continuation is scored from (``logits_to_keep``):
        a 128k-word vocabulary times every position of long questions would not fit."""
        width = len(chunk[0][0])
        ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (inp, _) in enumerate(chunk):
            ids[row, :len(inp)] = torch.tensor(inp)
            mask[row, :len(inp)] = 1
        keep = sorted({t for first, end in spans for t in range(first, end)})
        kwargs: dict[str, Any] = {}
        if self._keeps_logits:
            kwargs["logits_to_keep"] = torch.tensor(keep, device=self.device)
            column = {t: k for k, t in enumerate(keep)}
        else:
            column = {t: t for t in keep}
        with torch.no_grad(), edit_context(self.adapter, [pos for _, pos in chunk]):
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs).logits
        return logits, column

    @property
    def _keeps_logits(self) -> bool:
        if not hasattr(self, "_keeps"):
            model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            self._keeps = "logits_to_keep" in inspect.signature(model.forward).parameters
        return self._keeps

    def _resolve_batch_size(self, requests: list[Any], override_bs: int | None) -> int:
        size = override_bs or self.batch_size
        if size == "auto":
            if getattr(self, "_auto_size", None) is None:  # sized once, on the longest request
                longest = max(range(len(requests)), key=lambda i: len(requests[i][1]) + len(requests[i][2]))
                self._auto_size = int(self._detect_batch_size(requests, pos=longest))
            size = self._auto_size
        self.last_batch_size = max(1, int(size))
        return self.last_batch_size

    def _model_generate(self, context: Any, max_length: int, stop: Any, **kwargs: Any) -> Any:
        # Left-padded prompts: every row's last prompt token is the last column.
        with edit_context(self.adapter, [context.shape[1] - 1] * context.shape[0], once=True):
            return super()._model_generate(context, max_length, stop, **kwargs)
