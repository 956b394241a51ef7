"""Forget requests of a sequence: which authors each one forgets, and which rows it trains on.

``sequence.requests`` is either a number (the authors of ``sequence.split`` in that many equal
consecutive groups: forget10's 20 authors in 5 requests of 4) or a list of forget splits
(``[forget01, forget05, forget10]``: each request forgets the authors of its split not forgotten
by an earlier one). The evaluation's forget set is the union (``sequence.split``, by default the
largest split listed), so one retain-model reference serves every request.
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
    """One forget request: its 1-based number, a name for reports and the authors it forgets."""

    number: int
    name: str
    authors: tuple[int, ...]


def author_groups(requests: Sequence[tuple[int, Sequence[int]]]) -> dict[str, list[int]]:
    """The evaluation's forget groups after these (request number, authors): each request's
    authors (``request_<k>``) and all of them together (``forgotten``)."""
    groups = {f"request_{number}": list(authors) for number, authors in requests}
    groups["forgotten"] = [a for _, authors in requests for a in authors]
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


def source_authors(source: Any, split: str) -> list[int]:
    forget_percent(split)
    return sorted({r["author"] for r in source.raw(split)})


def request_rows(source: Any, request: Request, forgotten: Sequence[int], retain_split: str) -> tuple[list[Row], list[Row]]:
    """A request's training rows: its authors' rows of the union split, and the retain split's
    rows of every author not forgotten so far (this request's and the earlier ones' excluded)."""
    authors, gone = set(request.authors), set(forgotten) | set(request.authors)
    forget = [r for r in source.rows("forget") if r["author"] in authors]
    retain = [r for r in source.rows(retain_split) if r["author"] not in gone]
    if not forget or not retain:
        raise GrunError(f"request {request.number} ({request.name}): no {'forget' if not forget else 'retain'} "
                        "rows left after data.subset; raise data.subset.retain_authors or use fewer requests")
    return forget, retain
