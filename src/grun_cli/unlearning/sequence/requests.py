"""Forget requests of a sequence: which authors (TOFU) or corpora (text, e.g. WMDP) each one
forgets, and which rows it trains on.

``sequence.requests`` is either a number (the authors of ``sequence.split`` in that many equal
consecutive groups: forget10's 20 authors in 5 requests of 4) or a list of forget splits
(``[forget01, forget05, forget10]``: each request forgets the authors of its split not forgotten
by an earlier one). The evaluation's forget set is the union (``sequence.split``, by default the
largest split listed), so one retain-model reference serves every request.

On text data (``data=wmdp``) a request is a forget corpus: ``sequence.requests=[bio,cyber]``
forgets the bio corpus, then the cyber one; every request keeps the retain corpora.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from grun_cli.data.splits import forget_percent
from grun_cli.errors import GrunError

Row = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One forget request: its 1-based number, a name for reports and the authors (or, on text
    data, the forget corpora) it forgets."""

    number: int
    name: str
    authors: tuple[int, ...] = ()
    corpora: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        """What a sequence keeps of the request (sequence.jsonl, the run card, the edit's provenance)."""
        return {"request": self.number, "name": self.name,
                **({"corpora": list(self.corpora)} if self.corpora else {"authors": list(self.authors)})}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Request:
        return cls(int(record["request"]), str(record["name"]), tuple(record.get("authors") or ()),
                   tuple(record.get("corpora") or ()))


def author_groups(requests: Sequence[tuple[int, Sequence[int]]]) -> dict[str, list[int]]:
    """The evaluation's forget groups after these (request number, authors): each request's
    authors (``request_<k>``) and all of them together (``forgotten``)."""
    groups = {f"request_{number}": list(authors) for number, authors in requests}
    groups["forgotten"] = [a for _, authors in requests for a in authors]
    return groups


def corpus_groups(requests: Sequence[Request]) -> dict[str, list[str]]:
    """The text evaluation's groups: each request's corpora and all forgotten so far."""
    groups = {f"request_{r.number}": list(r.corpora) for r in requests}
    groups["forgotten"] = [c for r in requests for c in r.corpora]
    return groups


def is_sequence(cfg: Mapping[str, Any]) -> bool:
    seq = cfg.get("sequence") or {}
    return seq.get("requests") not in (None, 0, [])


def union_split(seq: Mapping[str, Any]) -> str:
    """The forget split holding every request's authors: sequence.split, else the largest
    split of a list of requests."""
    requests = seq.get("requests")
    split = seq.get("split")
    if split:
        forget_percent(str(split))
        return str(split)
    if isinstance(requests, int | str) and not isinstance(requests, bool):
        raise GrunError(f"sequence.requests={requests} splits sequence.split into that many requests; "
                        "set sequence.split too, e.g. sequence.split=forget10")
    return max((str(r) for r in requests), key=forget_percent)


def plan(seq: Mapping[str, Any], source: Any) -> list[Request]:
    """The requests in order (checked: each forgets at least one author, none twice, all inside
    the union split)."""
    if not source.has_answers:  # requests of forget corpora, not of authors
        return corpus_plan(seq, source)
    requests = seq.get("requests")
    split = union_split(seq)
    union = source_authors(source, split)
    if isinstance(requests, int) and not isinstance(requests, bool):
        n = int(requests)
        if not 1 <= n <= len(union):
            raise GrunError(f"sequence.requests={n}: {split} has {len(union)} authors; give 1..{len(union)} "
                            "requests (each forgets at least one author)")
        size, extra = divmod(len(union), n)
        out, start = [], 0
        for k in range(n):
            chunk = tuple(union[start:start + size + (1 if k < extra else 0)])
            start += len(chunk)
            out.append(Request(k + 1, f"{split} part {k + 1}/{n}", chunk))
        return out
    if not isinstance(requests, Sequence) or isinstance(requests, str) or not requests:
        raise GrunError(f"sequence.requests={requests!r}: give a number of requests (with sequence.split) or a "
                        "list of forget splits, e.g. sequence.requests=[forget01,forget05,forget10]")
    out, done = [], set()
    for k, name in enumerate(requests):
        authors = [a for a in source_authors(source, str(name)) if a not in done]
        if not authors:
            raise GrunError(f"sequence.requests: {name} forgets no author that an earlier request did not; "
                            "list growing splits, e.g. [forget01,forget05,forget10]")
        outside = sorted(set(authors) - set(union))
        if outside:
            raise GrunError(f"sequence.requests: {name} has authors outside sequence.split={split}; "
                            f"set sequence.split to the largest split")
        done.update(authors)
        out.append(Request(k + 1, str(name), tuple(authors)))
    return out


def corpus_plan(seq: Mapping[str, Any], source: Any) -> list[Request]:
    """Text data: one forget corpus (of data.forget_corpora) per request, each once."""
    requests = seq.get("requests")
    corpora = list(source.forget_corpora)
    if isinstance(requests, str) or not isinstance(requests, Sequence) or not requests:
        raise GrunError(f"sequence.requests={requests!r}: on text data a request is a forget corpus; list them, "
                        f"e.g. sequence.requests=[{','.join(corpora)}]")
    out: list[Request] = []
    for k, name in enumerate(str(r) for r in requests):
        if name not in corpora:
            raise GrunError(f"sequence.requests: {name} is not one of data.forget_corpora={corpora}; list forget "
                            f"corpora, e.g. sequence.requests=[{','.join(corpora)}]")
        if any(name in r.corpora for r in out):
            raise GrunError(f"sequence.requests: {name} is listed twice; each corpus is forgotten once")
        out.append(Request(k + 1, name, corpora=(name,)))
    return out


def next_request(source: Any, split: str, earlier: Sequence[Request], union: str) -> Request:
    """One more request after ``earlier`` (``base_run=``): ``split``'s authors not forgotten yet,
    all requests inside the evaluation's ``union`` split."""
    done = {a for r in earlier for a in r.authors}
    authors = [a for a in source_authors(source, split) if a not in done]
    if not authors:
        raise GrunError(f"data.forget_split={split}: every one of its authors was forgotten by the base run already; "
                        "give a larger split, e.g. data.forget_split=forget10")
    outside = sorted(done - set(source_authors(source, union)))
    if outside:
        raise GrunError(f"data.forget_split={split}: the base run's authors are not all inside {union}, so one "
                        "evaluation cannot report every request; give a split that holds them (TOFU's are nested)")
    return Request(len(earlier) + 1, split, tuple(authors))


def source_authors(source: Any, split: str) -> list[int]:
    forget_percent(split)
    return sorted({r["author"] for r in source.raw(split)})


def request_rows(source: Any, request: Request, forgotten: Sequence[int], retain_split: str) -> tuple[list[Row], list[Row]]:
    """A request's training rows: its authors' rows of the union split, and the retain split's
    rows of every author not forgotten so far (this request's and the earlier ones' excluded).
    Text data: its corpora's training texts, and the retain corpora's."""
    if request.corpora:
        wanted = set(request.corpora)
        return [r for r in source.rows("forget") if r["corpus"] in wanted], source.rows("retain")
    authors, gone = set(request.authors), set(forgotten) | set(request.authors)
    forget = [r for r in source.rows("forget") if r["author"] in authors]
    retain = [r for r in source.rows(retain_split) if r["author"] not in gone]
    if not forget or not retain:
        raise GrunError(f"request {request.number} ({request.name}): no {'forget' if not forget else 'retain'} "
                        "rows left after data.subset; raise data.subset.retain_authors or use fewer requests")
    return forget, retain
