"""Plain-text unlearning corpora (WMDP): forget corpora (bio, cyber) and retain corpora.

Each corpus is a JSON-Lines file of ``{"text": ...}`` rows in ``data.local_dir`` (default
``$GRUN_DATA_DIR/wmdp``) or a Hugging Face Hub data set. The last ``data.heldout`` texts of
every corpus are held out: never trained on, they measure the corpus likelihood before and
after unlearning (held-out forget / retain NLL).

A text has no prompt, so the edit position follows the official GRUN code: the text is cut
at ``int(edit_fraction * n_tokens)`` (BOS counted); the edit sits on the token before the cut
and the unlearning losses read the tokens after it. Fine-tuning a target learns every token.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grun_cli.errors import GrunError, first_line
from grun_cli.io_utils import read_jsonl
from grun_cli.logprobs import IGNORE_INDEX

log = logging.getLogger(__name__)

Row = dict[str, Any]
#: Split names of a text source: training texts, held-out texts, and the target's training set.
TEXT_SPLITS = ("forget", "retain", "forget_heldout", "retain_heldout", "full")


def encode_text(tokenizer: Any, text: str, max_length: int, edit_fraction: float, *, add_bos: bool = True,
                label_all: bool = False) -> dict[str, Any]:
    """input_ids (BOS + text, cut to max_length), labels and prompt_len (= the cut).

    ``label_all``: every token after BOS is a label (language modelling, for fine-tuning);
    otherwise only the tokens after the cut (what the unlearning losses and NLL read)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if add_bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    ids = ids[:max_length]
    if len(ids) < 2:
        raise GrunError(f"text too short to learn from after tokenization ({text[:60]!r}); "
                        "raise data.min_chars to drop such texts")
    cut = min(max(1, int(len(ids) * edit_fraction)), len(ids) - 1)
    first_label = 1 if label_all else cut
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * first_label + ids[first_label:], "prompt_len": cut}


class TextSource:
    """Forget and retain text corpora with held-out texts, in the interface the commands use
    for QA sources (``rows``, ``tokenizer_corpus``, ``describe``, ``encode_*``)."""

    name = "wmdp"
    kind = "text"
    has_answers = False

    def __init__(self, cfg: Mapping[str, Any], data_root: str | None = None) -> None:
        self.cfg = cfg
        self.forget_corpora = [str(c) for c in cfg.get("forget_corpora") or []]
        self.retain_corpora = [str(c) for c in cfg.get("retain_corpora") or []]
        if not self.forget_corpora or not self.retain_corpora:
            raise GrunError("data.forget_corpora and data.retain_corpora must each name at least one corpus "
                            f"(got {self.forget_corpora} and {self.retain_corpora})")
        self.corpora: Mapping[str, Any] = cfg.get("corpora") or {}
        for name in self.forget_corpora + self.retain_corpora:
            if name not in self.corpora:
                raise GrunError(f"corpus '{name}' is not defined under data.corpora "
                                f"(known: {', '.join(self.corpora)}); add data.corpora.{name}.file=...")
        self.forget_split = "+".join(self.forget_corpora)
        self.retain_split = "+".join(self.retain_corpora)
        self.heldout = int(cfg["heldout"])
        self.min_chars = int(cfg["min_chars"])
        self.max_texts = cfg.get("max_texts")
        self.edit_fraction = float(cfg["edit_fraction"])
        if not 0.0 < self.edit_fraction < 1.0:
            raise GrunError(f"data.edit_fraction={self.edit_fraction} must be in (0, 1)")
        self.max_tokens = int(cfg["max_tokens"])
        local = cfg.get("local_dir")
        self._origin = "data.local_dir"
        if not local and data_root:
            local, self._origin = os.path.join(data_root, "wmdp"), "GRUN_DATA_DIR (paths.data_dir)"
        self.local_dir = Path(local).expanduser().resolve() if local else None
        if self.local_dir is not None and not self.local_dir.is_dir():
            raise GrunError(f"corpus folder {self.local_dir} (from {self._origin}) does not exist; point "
                            "data.local_dir at the folder holding the corpora's .jsonl files")
        self._texts: dict[str, tuple[list[str], str]] = {}

    # -- loading ---------------------------------------------------------------------------
    def _load(self, name: str) -> list[str]:
        if name not in self._texts:
            texts, origin = self._read(name, self.corpora[name])
            texts = [t for t in texts if isinstance(t, str) and len(t.strip()) > self.min_chars]
            if self.max_texts:
                texts = texts[: int(self.max_texts)]
            if len(texts) <= self.heldout:
                raise GrunError(f"corpus '{name}' ({origin}) has {len(texts)} usable texts, not more than "
                                f"data.heldout={self.heldout}; lower data.heldout or data.min_chars")
            log.info("corpus %s: %d texts from %s (%d held out)", name, len(texts), origin, self.heldout)
            self._texts[name] = (texts, origin)
        return self._texts[name][0]

    def _read(self, name: str, spec: Mapping[str, Any]) -> tuple[list[str], str]:
        file = spec.get("file")
        if file:
            path = Path(str(file)).expanduser()
            if not path.is_absolute() and self.local_dir is not None:
                path = self.local_dir / path
            if path.is_file():
                return [r["text"] for r in read_jsonl(path, required=("text",))], str(path)
        hub = spec.get("hub_id")
        if not hub:
            where = f"{self.local_dir}" if self.local_dir else "no folder (data.local_dir / GRUN_DATA_DIR unset)"
            raise GrunError(f"corpus '{name}': file {file} not found in {where} and no data.corpora.{name}.hub_id; "
                            "set data.local_dir (or GRUN_DATA_DIR) to the folder holding it")
        import datasets

        try:
            ds = datasets.load_dataset(hub, spec.get("hub_name"), split=spec.get("hub_split") or "train")
        except Exception as e:  # offline, gated, unknown config
            raise GrunError(f"cannot load corpus '{name}' from the Hub ({hub}, {spec.get('hub_name')}): "
                            f"{type(e).__name__}: {first_line(e)}. Offline? Put "
                            f"{file or name + '.jsonl'} in data.local_dir (or GRUN_DATA_DIR/wmdp)") from e
        return [r.get(spec.get("hub_field") or "text") for r in ds], f"{hub}/{spec.get('hub_name')}"

    def _corpus_rows(self, forget: bool, heldout: bool) -> list[Row]:
        """Training or held-out rows of the forget or retain corpora; forget rows carry their
        corpus's position in data.forget_corpora as corpus_id, retain rows -1."""
        rows: list[Row] = []
        for k, name in enumerate(self.forget_corpora if forget else self.retain_corpora):
            texts = self._load(name)
            cut = len(texts) - self.heldout
            part = range(cut, len(texts)) if heldout else range(cut)
            rows.extend({"text": texts[i], "corpus": name, "corpus_id": k if forget else -1, "index": i}
                        for i in part)
        return rows

    # -- the source interface --------------------------------------------------------------
    def resolve(self, split: str) -> str:
        if split not in TEXT_SPLITS:
            raise GrunError(f"split '{split}' does not exist for text corpora; use one of {', '.join(TEXT_SPLITS)}")
        return split

    def rows(self, split: str) -> list[Row]:
        """forget / retain: training texts; *_heldout: the held-out texts; full: forget + retain
        training texts (what the tiny target learns). Forget rows carry corpus_id 0.. in
        data.forget_corpora order; retain rows -1."""
        split = self.resolve(split)
        if split == "full":
            return self.rows("forget") + self.rows("retain")
        rows = self._corpus_rows(split.startswith("forget"), split.endswith("_heldout"))
        if not rows:
            raise GrunError(f"text split '{split}' is empty; lower data.heldout")
        return rows

    def tokenizer_corpus(self) -> list[str]:
        return [t for name in dict.fromkeys(self.forget_corpora + self.retain_corpora) for t in self._load(name)]

    def describe(self) -> str:
        origins = {n: self._texts[n][1] for n in self._texts}
        return f"text corpora forget={self.forget_split} retain={self.retain_split} {origins or ''}".strip()

    def encode_for_training(self, tokenizer: Any, template: Any, row: Row, max_length: int) -> dict[str, Any]:
        """Fine-tuning: every token is learnt."""
        return encode_text(tokenizer, row["text"], min(max_length, self.max_tokens), self.edit_fraction,
                           add_bos=template.add_bos, label_all=True)

    def encode_for_unlearning(self, tokenizer: Any, template: Any, row: Row, max_length: int) -> dict[str, Any]:
        """Unlearning and NLL: the edit before the cut, the tokens after it scored."""
        feat = encode_text(tokenizer, row["text"], min(max_length, self.max_tokens), self.edit_fraction,
                           add_bos=template.add_bos)
        feat["corpus_id"] = row["corpus_id"]
        return feat

    def probe_sets(self, forget_rows: list[Row], retain_rows: list[Row], n: int) -> dict[str, list[Row]]:
        return {}  # the probe reads the held-out texts

    def probe(self, model: Any, tokenizer: Any, template: Any, sets: Mapping[str, list[Row]], max_length: int,
              batch_size: int, adapter: Any = None, prefix: str = "") -> dict[str, float]:
        """The held-out forget / retain text NLL."""
        return self.heldout_nll(model, tokenizer, template, max_length, batch_size, adapter=adapter, prefix=prefix)

    def heldout_nll(self, model: Any, tokenizer: Any, template: Any, max_length: int, batch_size: int,
                    adapter: Any = None, prefix: str = "") -> dict[str, float]:
        from grun_cli.scoring.text_nll import heldout_nll

        return heldout_nll(model, tokenizer, template, self, max_length, batch_size=batch_size, adapter=adapter,
                           prefix=prefix)

    def training_check(self, model: Any, tokenizer: Any, template: Any, rows: list[Row], check: Mapping[str, Any],
                       max_length: int) -> dict[str, float]:
        """Corpus likelihood: the held-out texts' NLL."""
        return self.heldout_nll(model, tokenizer, template, max_length, int(check["batch_size"]))

    def gate_sets(self, probe_sets: Mapping[str, list[Row]]) -> dict[str, list[Row]]:
        return {"forget": self.rows("forget_heldout"), "retain": self.rows("retain_heldout")}

    def gate_prompt(self, tokenizer: Any, template: Any, row: Row, max_length: int) -> list[int]:
        """The text up to its cut, where the edit sits."""
        feat = self.encode_for_unlearning(tokenizer, template, row, max_length)
        return feat["input_ids"][: feat["prompt_len"]]

    def gate_negative(self, tokenizer: Any, template: Any, text: str, max_length: int) -> dict[str, Any] | None:
        return self.encode_for_unlearning(tokenizer, template, {"text": text, "corpus_id": -1}, max_length)

