"""Values of the frozen starting model computed once before training: the reference values a
method reads (``train.reference=cached``, the default) and GRUN's frozen prefix
(``adapter.cache_prefix``, below).

NPO's and IdkDPO's reference log-likelihoods and RMU's frozen retain activations come from the
starting model, which no training step changes: one batched pass over the training rows
before training gives every value the live reference would compute again at every step. The
values ride in the dataset's features (host memory) and reach the method through the batch
(``ModelAccess.reference_nll`` / ``reference_hidden`` read them when present). Full
fine-tuning then needs no frozen second copy of the model.

Exact up to float rounding: a row's values do not depend on the rows it is batched with
(right padding, attention mask), but the arithmetic of a differently shaped batch may round
differently in the last bits. Dropout would make the live reference random; the models grun
supports have none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grun_cli.inference import inference_mode
from grun_cli.logprobs import sequence_nll
from grun_cli.scoring.likelihood import pad_batch

log = logging.getLogger(__name__)

#: feature / batch keys of the cached values
REF_NLL = "ref_nll"
REF_HIDDEN = "ref_hidden"
REF_LAYER = "ref_layer"
PREFIX = "prefix"  # GRUN: the output of the block below the lowest edited one, every token
MODES = ("cached", "live")


@dataclass
class CacheReport:
    """What was cached (for the log, metrics and the run card)."""

    mode: str  # cached | live
    values: dict[str, int] = field(default_factory=dict)  # part -> rows cached
    bytes: int = 0
    seconds: float = 0.0
    why_live: str | None = None

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reference": self.mode}
        if self.mode == "cached":
            out.update(reference_cache_bytes=self.bytes, reference_cache_s=round(self.seconds, 2))
        return out


def _batches(features: Sequence[dict[str, Any]], size: int) -> Any:
    for start in range(0, len(features), size):
        yield features[start: start + size]


def _nll_values(features: Sequence[dict[str, Any]], adapter: Any, pad_id: int, batch_size: int,
                device: Any, progress: Callable[[str, int], Any]) -> None:
    """``feature[REF_NLL]``: the starting model's summed label NLL of each feature."""
    bar = progress("reference: log-likelihoods", len(features))
    for chunk in _batches(features, batch_size):
        batch = {k: v.to(device) for k, v in pad_batch(chunk, pad_id).items()}
        logits = adapter.reference_logits(batch, starting=True)
        values = sequence_nll(logits, batch["labels"])[0].float().cpu()
        for feat, value in zip(chunk, values, strict=True):
            feat[REF_NLL] = value
        bar.update(len(chunk))
    bar.close()


def _hidden_values(features: Sequence[dict[str, Any]], adapter: Any, layer: int, pad_id: int,
                   batch_size: int, device: Any, progress: Callable[[str, int], Any],
                   key: str = REF_HIDDEN, desc: str = "reference") -> None:
    """``feature[key]``: the starting model's block-``layer`` output at each real token
    (tokens x hidden, in the model's dtype, on the host)."""
    bar = progress(f"{desc}: block {layer} activations", len(features))
    for chunk in _batches(features, batch_size):
        batch = {k: v.to(device) for k, v in pad_batch(chunk, pad_id).items()}
        hidden = adapter.reference_hidden(batch, layer, starting=True).detach().cpu()
        for row, feat in enumerate(chunk):
            feat[key] = hidden[row, : len(feat["input_ids"])].clone()
            if key == REF_HIDDEN:
                feat[REF_LAYER] = layer
        bar.update(len(chunk))
    bar.close()


def hidden_bytes(features: Sequence[Mapping[str, Any]], hidden_size: int, element_size: int) -> int:
    """Host memory the cached activations of ``features`` take."""
    return sum(len(f["input_ids"]) for f in features) * hidden_size * element_size


def cache_references(dataset: Any, references: Mapping[str, str], adapter: Any, *, layer: int | None,
                     pad_id: int, batch_size: int, max_bytes: float, progress: Callable[[str, int], Any]
                     ) -> CacheReport:
    """Compute the values ``references`` (a method's: batch part -> nll | hidden) names for every
    training row of ``dataset`` (a ForgetRetainDataset) with the adapter's starting model, before
    the first training step. IDK rows: every (question, refusal) pair the training can draw.
    Activations larger than ``max_bytes`` stay live, said in one log line."""
    import time

    started = time.time()
    model, _ = adapter.starting_model()
    device = next(model.parameters()).device
    report = CacheReport("cached")
    with inference_mode(model):
        for part, kind in references.items():
            if kind == "nll":
                if part == "idk":
                    answers = len(dataset.idk_answers or [])
                    features = [dataset.idk_feature(i, j) for i in range(len(dataset.forget)) for j in range(answers)]
                else:
                    features = getattr(dataset, part)
                _nll_values(features, adapter, pad_id, batch_size, device, progress)
                report.values[part] = len(features)
                report.bytes += 4 * len(features)
            elif kind == "hidden":
                features = getattr(dataset, part)
                config = model.config
                size = hidden_bytes(features, int(config.hidden_size), next(model.parameters()).element_size())
                if size > max_bytes:
                    report.why_live = (f"{part} activations would take {size / 2**30:.2f} GiB of host memory, over "
                                       f"train.reference_max_gb={max_bytes / 2**30:g}")
                    log.info("reference: %s; computing them live at every step instead", report.why_live)
                    continue
                if layer is None:
                    raise ValueError("a cached hidden reference needs the block it is read at")
                _hidden_values(features, adapter, layer, pad_id, batch_size, device, progress)
                report.values[part] = len(features)
                report.bytes += size
            else:
                raise ValueError(f"unknown reference kind {kind!r} for part {part!r}")
    report.seconds = time.time() - started
    if not report.values:
        report.mode = "live"
    log.info("reference: cached %s (%.1f MB, %.1f s)%s",
             ", ".join(f"{part} {n} rows" for part, n in report.values.items()) or "nothing",
             report.bytes / 1e6, report.seconds, f"; live: {report.why_live}" if report.why_live else "")
    return report


def cache_prefix(dataset: Any, adapter: Any, setting: Any, *, pad_id: int, batch_size: int, max_bytes: float,
                 progress: Callable[[str, int], Any]) -> dict[str, Any]:
    """GRUN's frozen prefix for every forget and retain training row (``adapter.cache_prefix``:
    auto | true | false): each step then runs only the blocks from the lowest edited one up.
    IDK rows (a refusal per question, drawn per fetch) stay live. Returns what was done, for the
    log and metrics.json."""
    import time

    mode = str(setting).lower()
    block = adapter.prefix_block()
    if mode in ("false", "none", "off") or block is None:
        why = "off" if mode in ("false", "none", "off") else f"adapter={adapter.kind} has no frozen prefix below block 0"
        return {"prefix_cache": "live", "prefix_cache_why": why}
    model, _ = adapter.starting_model()
    features = [*dataset.forget, *dataset.retain]
    size = hidden_bytes(features, int(model.config.hidden_size), next(model.parameters()).element_size())
    if size > max_bytes:
        why = (f"the prefix of {len(features)} rows would take {size / 2**30:.2f} GiB of host memory, over "
               f"adapter.cache_prefix_max_gb={max_bytes / 2**30:g}")
        log.info("prefix: %s; every step runs the whole model instead", why)
        return {"prefix_cache": "live", "prefix_cache_why": why}
    started = time.time()
    with inference_mode(model):
        _hidden_values(features, adapter, block, pad_id, batch_size, next(model.parameters()).device, progress,
                       key=PREFIX, desc="frozen prefix")
    seconds = time.time() - started
    log.info("prefix: cached the output of block %d for %d rows (%.1f MB, %.1f s); steps start at block %d",
             block, len(features), size / 1e6, seconds, block + 1)
    return {"prefix_cache": "cached", "prefix_cache_bytes": size, "prefix_cache_s": round(seconds, 2)}
