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

import logging
import time
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from grun_cli.eval.likelihood import edit_context

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
        if self._prepend_bos and ids[:1] != [self.tokenizer.bos_token_id]:
            ids = [self.tokenizer.bos_token_id, *ids]
        return ids[-left_truncate_len:] if left_truncate_len else ids

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
            inp = tuple((context + continuation)[-(window + 1):][:-1])
            groups[(inp, max(0, len(inp) - len(continuation)))].append(i)
        # Longest inputs first: an out-of-memory batch shows at once, and batches pad little.
        keys = sorted(groups, key=lambda k: len(k[0]), reverse=True)
        batch_size = self._resolve_batch_size(requests, override_bs)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        model = self.model
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="grun loglikelihood")
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            width = len(chunk[0][0])
            ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (inp, _) in enumerate(chunk):
                ids[row, :len(inp)] = torch.tensor(inp)
                mask[row, :len(inp)] = 1
            with torch.no_grad(), edit_context(self.adapter, [pos for _, pos in chunk]):
                logits = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logprobs = F.log_softmax(logits.float(), dim=-1)
            for row, key in enumerate(chunk):
                inp = key[0]
                for i in groups[key]:
                    cont = requests[i][2]
                    span = logprobs[row, len(inp) - len(cont):len(inp)]
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

    def _resolve_batch_size(self, requests: list[Any], override_bs: int | None) -> int:
        size = override_bs or self.batch_size
        if size == "auto":
            size = self._detect_batch_size(requests)
        return max(1, int(size))

    def _model_generate(self, context: Any, max_length: int, stop: Any, **kwargs: Any) -> Any:
        # Left-padded prompts: every row's last prompt token is the last column.
        with edit_context(self.adapter, [context.shape[1] - 1] * context.shape[0], once=True):
            return super()._model_generate(context, max_length, stop, **kwargs)
