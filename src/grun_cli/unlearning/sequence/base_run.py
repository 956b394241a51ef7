"""`grun unlearn base_run=<run> data.forget_split=<split>`: one more forget request on top of an
earlier `grun unlearn` run (a single run or a sequence), written as a new run folder.

The earlier run's requests count as done: their authors stay out of the new request's retain
rows, the evaluation reports each of them again (``request_<k>_*``), and the new folder holds the
whole model — for GRUN every earlier edit (frozen, with its provenance) plus the new one; for LoRA
and full fine-tuning the earlier weights trained further. The same base model is required (the
adapter's base fingerprint is checked as it loads); model, data and adapter kind must be the
earlier run's, checked before anything loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grun_cli.adapters import load_adapter
from grun_cli.data import has_answers
from grun_cli.data.splits import forget_percent
from grun_cli.errors import GrunError
from grun_cli.train.run_card import read_run_card
from grun_cli.unlearning.sequence.requests import Request, source_authors

#: Settings the new request must share with the earlier run (the model it edits, the data its
#: authors come from, the kind of adapter that continues); None: the whole group.
SAME = (("model", "name"), ("model", "name_or_path"), ("target", None), ("data", None), ("adapter", "kind"))
#: Data settings a request may change (which authors it forgets; the retain rows follow them).
PER_REQUEST = ("forget_split", "retain_split")
#: GRUN settings that make an edit stackable on the earlier ones.
SAME_GRUN = ("layers", "combine", "combine_coeff", "combine_bias")


@dataclass
class BaseRun:
    """An earlier complete `grun unlearn` run that a new request continues."""

    path: Path
    card: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> BaseRun:
        path = Path(str(path)).expanduser()
        try:
            card = read_run_card(path, "unlearn")
        except GrunError as e:
            raise GrunError(f"base_run={path}: {e}") from None
        return cls(path, card)

    @property
    def config(self) -> dict[str, Any]:
        return self.card["config"]

    @property
    def kind(self) -> str:
        return str(self.config["adapter"]["kind"])

    @property
    def split(self) -> str:
        """The earlier run's forget split (a sequence's: the union of its requests)."""
        return str(self.card["data"]["forget_split"])

    def mismatches(self, cfg: Mapping[str, Any]) -> Iterator[str]:
        """Settings of the new request that do not fit the earlier run (one line each)."""
        for group, key in SAME:
            mine, theirs = _setting(cfg, group, key), _setting(self.config, group, key)
            if mine != theirs:
                name = group if key is None else f"{group}.{key}"
                differ = sorted(k for k in {*mine, *theirs} if mine.get(k) != theirs.get(k)) if key is None else []
                yield (f"base_run={self.path} was run with other {name} settings ({', '.join(differ) or theirs}); "
                       f"one more request continues the same {group}: give the earlier run's "
                       f"{name}{' (see its run_card.json)' if key is None else '=' + str(theirs)}")
        adapter = cfg.get("adapter") or {}
        if adapter.get("kind") == "grun" == self.kind:
            for key in SAME_GRUN:
                mine, theirs = adapter.get(key), self.config["adapter"].get(key)
                if mine is not None and theirs is not None and _plain(mine) != _plain(theirs):
                    yield (f"base_run={self.path}: its GRUN edits have adapter.{key}={_plain(theirs)}, this request "
                           f"{_plain(mine)}; stacked edits share it: set adapter.{key}={_plain(theirs)}")
        data = cfg.get("data") or {}
        split = data.get("forget_split")
        subset = (data.get("subset") or {}).get("retain_authors")
        if subset is not None and split and forget_percent(str(split)) > forget_percent(self.split):
            yield (f"base_run={self.path} unlearned a target fine-tuned on an author subset of {self.split} "
                   f"(data.subset.retain_authors={subset}): it never learned {split}'s other authors; ask for "
                   f"authors inside {self.split}, or start the first request with sequence.split={split}")
        if (cfg.get("sequence") or {}).get("requests") not in (None, 0, []):
            yield ("base_run= adds one request (data.forget_split); sequence.requests runs several from the start: "
                   "give one of the two")
        if cfg.get("resume"):
            yield "resume= does not continue a base_run= request; start it again in a new folder"
        if not has_answers(data):
            yield (f"base_run= continues a TOFU-shaped run; data={data.get('name')} has text "
                   "corpora: use sequence.requests=[...] with corpora instead")

    def union_split(self, new_split: str) -> str:
        """The evaluation's forget split: the larger of the earlier one and the new request's."""
        return max((self.split, new_split), key=forget_percent)

    def requests(self, source: Any) -> list[Request]:
        """The earlier run's requests (a single run: one, its forget split's authors)."""
        sequence = self.card["data"].get("sequence")
        if sequence:
            return [Request.from_record(r) for r in sequence]
        return [Request(1, self.split, tuple(source_authors(source, self.split)))]

    def provenance(self, source: Any) -> list[dict[str, Any]]:
        """Each earlier request's record (what a sequence keeps per request)."""
        sequence = self.card["data"].get("sequence")
        if sequence:
            return [dict(r) for r in sequence]
        data = self.card["data"]
        (request,) = self.requests(source)
        return [{**request.record(), "forget_rows": data.get("forget_rows"), "retain_rows": data.get("retain_rows"),
                 "fingerprint": data.get("fingerprint"), "method": self.card.get("method"), "run": str(self.path)}]

    def lines(self, source: Any) -> list[dict[str, Any]]:
        """The earlier run's sequence.jsonl lines (a single run: one, from its metrics)."""
        path = self.path / "sequence.jsonl"
        if path.is_file():
            return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        (info,) = self.provenance(source)
        return [{"request": info, "adapter": self.kind, "method": self.card.get("method"),
                 "seed": int(self.config.get("seed", 42)), "forgotten_authors": len(info["authors"]),
                 "metrics": dict(self.card.get("metrics") or {})}]

    def load(self, s: Any, source: Any) -> Any:
        """The earlier model on the loaded base (load_model_state); a single GRUN run's edit gets
        its provenance as a request."""
        adapter = load_model_state(s, self.path / "adapter", self.kind)
        if self.kind == "grun" and "request" not in adapter.cfg:  # a single run: its edit's provenance
            adapter.cfg["request"] = self.provenance(source)[-1]
        return adapter


def load_model_state(s: Any, folder: Path, kind: str) -> Any:
    """A saved model on the loaded base, to go on from: GRUN's edits (all frozen; the caller
    stacks them under a new edit), LoRA's weights (trainable, going on), full fine-tuning's
    weights copied into the base model (returns None: the next request makes its adapter as
    usual)."""
    if kind == "full":
        load_full_weights(s.loaded.model, folder)
        return None
    return load_adapter(s.loaded.model, folder, trainable=kind == "lora")


def load_full_weights(model: Any, folder: Path) -> None:
    """Copy a full fine-tuning run's saved weights into ``model`` (same architecture); every
    parameter must be in the files, or tied to one that is."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GrunError(f"{folder} holds no *.safetensors weights; copy the whole run folder again or rerun it")
    state: dict[str, Any] = {}
    for file in files:
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {p.data_ptr() for name, p in model.state_dict().items() if name in state}
    untied = [name for name in missing if model.state_dict()[name].data_ptr() not in loaded]
    if unexpected or untied:
        raise GrunError(f"{folder}: its weights do not fit this model (missing {untied[:3]}, unexpected "
                        f"{list(unexpected)[:3]}); base_run= needs the same model.name_or_path")


def _setting(cfg: Mapping[str, Any], group: str, key: str | None) -> Any:
    """A setting as plain data (a whole group without its per-request keys when key is None)."""
    value = _plain(cfg.get(group) or {})
    if key is None:
        return {k: v for k, v in value.items() if k not in PER_REQUEST}
    return value.get(key)


def _plain(value: Any) -> Any:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
