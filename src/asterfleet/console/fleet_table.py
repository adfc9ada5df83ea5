"""The Fleet page's table at fleet scale (pure): filter by state, set, label
and text, sort by any column, one page at a time, counts per state.

The page and its live stream both call :func:`select`, so what a browser is
sent is always the page it asked for, never the whole fleet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from asterfleet.errors import UsageError

PAGE_SIZES = (25, 50, 100, 250, 500)
DEFAULT_SIZE = 50


def _calls(row: Mapping[str, Any]) -> tuple[int, int]:
    calls = row["active_calls"]
    return (0, calls) if calls is not None else (-1, 0)


# Column -> sort key of a row (rows are NodeView.as_dict()).
SORT_KEYS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "id": lambda r: r["id"],
    "set": lambda r: (r["set"], r["id"]),
    "uri": lambda r: r["sip_uri"],
    "agent": lambda r: (r["agent_state"], r["id"]),
    "operator": lambda r: (r["operator"], r["id"]),
    "state": lambda r: (r["state"], r["id"]),
    "weight": lambda r: (r["weight"], r["id"]),
    "calls": lambda r: (_calls(r), r["id"]),
    "version": lambda r: (r["version"] or "", r["id"]),
    "age": lambda r: (-(r["started_at"] or 0), r["id"]),
}


@dataclass(frozen=True)
class FleetQuery:
    state: str = ""
    set: int | None = None
    label: str = ""  # key=value, or key (has the label)
    q: str = ""  # text in the id, URI, version, labels, intent
    sort: str = "id"
    desc: bool = False
    page: int = 1
    size: int = DEFAULT_SIZE

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FleetQuery:
        """The query of a URL; UsageError naming the bad parameter."""
        sort = params.get("sort", "id") or "id"
        if sort not in SORT_KEYS:
            raise UsageError(f"sort={sort!r}: sort by one of {', '.join(SORT_KEYS)}")
        set_text = params.get("set", "").strip()
        try:
            set_id = int(set_text) if set_text else None
            page = int(params.get("page", "1") or 1)
            size = int(params.get("size", str(DEFAULT_SIZE)) or DEFAULT_SIZE)
        except ValueError:
            raise UsageError(
                "set, page and size are whole numbers: e.g. ?set=1&page=2&size=100"
            ) from None
        if size not in PAGE_SIZES:
            raise UsageError(f"size={size}: show {', '.join(map(str, PAGE_SIZES))} nodes a page")
        return cls(
            state=params.get("state", "").strip(),
            set=set_id,
            label=params.get("label", "").strip(),
            q=params.get("q", "").strip()[:100],
            sort=sort,
            desc=params.get("desc", "") in ("1", "true"),
            page=max(1, page),
            size=size,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        q = replace(self, **changes)
        out: dict[str, str] = {}
        if q.state:
            out["state"] = q.state
        if q.set is not None:
            out["set"] = str(q.set)
        if q.label:
            out["label"] = q.label
        if q.q:
            out["q"] = q.q
        if q.sort != "id":
            out["sort"] = q.sort
        if q.desc:
            out["desc"] = "1"
        if q.page != 1:
            out["page"] = str(q.page)
        if q.size != DEFAULT_SIZE:
            out["size"] = str(q.size)
        return out

    def url(self, **changes: Any) -> str:
        """This query with ``changes``, as a link to the Fleet page."""
        p = self.params(**changes)
        return "/fleet" + ("?" + urlencode(p) if p else "")

    def sort_url(self, column: str) -> str:
        """A column header's link: sort by it, or flip the order if it is the sort."""
        return self.url(sort=column, desc=not self.desc if self.sort == column else False, page=1)


@dataclass
class FleetPage:
    query: FleetQuery
    rows: list[dict[str, Any]]
    total: int  # nodes in the fleet
    matching: int  # nodes that match the filters
    counts: dict[str, int] = field(default_factory=dict)  # per state, other filters applied

    @property
    def pages(self) -> int:
        return max(1, -(-self.matching // self.query.size))


def _label_matches(labels: Mapping[str, str], want: str) -> bool:
    key, eq, value = want.partition("=")
    if key not in labels:
        return False
    return not eq or labels[key] == value


def _text_matches(row: Mapping[str, Any], text: str) -> bool:
    t = text.lower()
    intent = row.get("intent") or {}
    hay = [
        row["id"],
        row["sip_uri"],
        row["version"] or "",
        row["operator"],
        intent.get("by", ""),
        intent.get("note", ""),
        *(f"{k}={v}" for k, v in row["labels"].items()),
    ]
    return any(t in h.lower() for h in hay)


def select(rows: list[dict[str, Any]], q: FleetQuery) -> FleetPage:
    """One page of ``rows`` for ``q``, with the per-state counts (pure)."""
    base = [
        r
        for r in rows
        if (q.set is None or r["set"] == q.set)
        and (not q.label or _label_matches(r["labels"], q.label))
        and (not q.q or _text_matches(r, q.q))
    ]
    counts: dict[str, int] = {}
    for r in base:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    matching = [r for r in base if not q.state or r["state"] == q.state]
    matching.sort(key=SORT_KEYS[q.sort], reverse=q.desc)
    pages = max(1, -(-len(matching) // q.size))
    page = min(q.page, pages)
    q = replace(q, page=page)
    start = (page - 1) * q.size
    return FleetPage(q, matching[start : start + q.size], len(rows), len(matching), counts)


def row_version(row: Mapping[str, Any]) -> str:
    """A short fingerprint of what a row shows, without its ticking age: the
    live stream sends a row only when this changes."""
    stable = {k: v for k, v in row.items() if k != "age_seconds"}
    digest = hashlib.blake2b(
        json.dumps(stable, sort_keys=True, default=str).encode(), digest_size=6
    )
    return digest.hexdigest()
