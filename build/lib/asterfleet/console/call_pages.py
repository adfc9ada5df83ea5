"""Calls for the Calls page, one page at a time, newest first, on large tables.

``GROUP BY call_id`` over the whole table (what :func:`search_calls` does)
reads every matching row before it can answer; on millions of messages that
is seconds. Instead the matching messages are walked newest first along the
``ts_us`` index (or the From/To/Call-ID index when that filter is more
selective) and distinct Call-IDs collected until the page is full, so the
work is proportional to the page, not to the table.

Calls are ordered by their newest matching message. A page's cursor is the
``(ts_us, id)`` of the last call on it; the next page walks from there and
drops calls that also have a matching message above the cursor (they were
on an earlier page). The walk is bounded: when it reads ``scan_limit`` rows
without filling the page it stops, returns what it found and a cursor to go
on from, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from asterfleet.capture.search import CallSummary, MessageQuery, _where, summarise_call
from asterfleet.capture.store import Message, Store, messages
from asterfleet.errors import UsageError

MAX_PAGE = 500
SCAN_LIMIT = 200_000
_FIRST_CHUNK = 512
_MAX_CHUNK = 16_384

#: Where a walk stopped: ``(ts_us, id)`` of a message; walk strictly below it.
Cursor = tuple[int, int]


@dataclass(frozen=True)
class CallPage:
    calls: list[CallSummary]
    next_cursor: Cursor | None  # None: nothing older matches
    scanned: int  # messages read to build the page
    truncated: bool  # the walk hit its bound before the page was full


def encode_cursor(cursor: Cursor | None) -> str:
    return "" if cursor is None else f"{cursor[0]}.{cursor[1]}"


def decode_cursor(text: str) -> Cursor | None:
    """``"<ts_us>.<id>"`` (what :func:`encode_cursor` gives); empty means the first page."""
    if not text:
        return None
    ts, dot, ident = text.partition(".")
    if not dot or not ts.isdigit() or not ident.isdigit():
        raise UsageError(f"cursor {text!r} is not one this console gave: start from page one")
    return int(ts), int(ident)


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string above every string starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def conditions(q: MessageQuery, dialect: str) -> list[sa.ColumnElement[bool]]:
    """The search's filters, plus index ranges for prefixes where the engine needs them.

    SQLite does not turn ``LIKE 'abc%'`` into an index range (its LIKE is
    case-insensitive, the index is not), so the equivalent range is added:
    the prefix match becomes case-sensitive there, as it is on PostgreSQL.
    """
    conds = list(_where(q))
    if dialect == "sqlite":
        for column, prefix in (
            (messages.c.from_user, q.from_user),
            (messages.c.to_user, q.to_user),
        ):
            if prefix:
                conds += [column >= prefix, column < prefix_upper_bound(prefix)]
    return conds


def _below(cursor: Cursor) -> sa.ColumnElement[bool]:
    ts, ident = cursor
    c = messages.c
    # Written so that ``ts_us <= ts`` stays an index range on both engines.
    return sa.and_(c.ts_us <= ts, sa.or_(c.ts_us < ts, c.id < ident))


def walk_query(conds: Sequence[sa.ColumnElement[bool]], cursor: Cursor | None, chunk: int) -> Any:
    """One chunk of the walk: matching messages below ``cursor``, newest first."""
    c = messages.c
    where = [*conds, _below(cursor)] if cursor else list(conds)
    return (
        sa.select(c.call_id, c.ts_us, c.id)
        .where(*where)
        .order_by(c.ts_us.desc(), c.id.desc())
        .limit(chunk)
    )


def _seen_above(
    conn: sa.Connection, conds: Sequence[sa.ColumnElement[bool]], cursor: Cursor, ids: list[str]
) -> set[str]:
    """Which of ``ids`` have a matching message at or above ``cursor``."""
    c = messages.c
    ts, ident = cursor
    above = sa.or_(c.ts_us > ts, sa.and_(c.ts_us == ts, c.id >= ident))
    query = sa.select(c.call_id).where(c.call_id.in_(ids), *conds, above).distinct()
    return {row[0] for row in conn.execute(query)}


def find_call_ids(
    store: Store,
    q: MessageQuery,
    limit: int,
    cursor: Cursor | None = None,
    scan_limit: int = SCAN_LIMIT,
) -> tuple[list[tuple[str, Cursor]], Cursor | None, int, bool]:
    """Up to ``limit`` Call-IDs below ``cursor`` with each one's newest match,
    the cursor for the next page, rows scanned, and whether the bound hit."""
    conds = conditions(q, store.dialect)
    found: list[tuple[str, Cursor]] = []
    seen: set[str] = set()
    position, scanned, chunk = cursor, 0, _FIRST_CHUNK
    with store.engine.connect() as conn:
        while True:
            rows = conn.execute(walk_query(conds, position, chunk)).all()
            scanned += len(rows)
            fresh: list[tuple[str, Cursor]] = []
            for call_id, ts, ident in rows:
                if call_id not in seen:
                    seen.add(call_id)
                    fresh.append((call_id, (ts, ident)))
            if cursor is not None and fresh:
                earlier = _seen_above(conn, conds, cursor, [cid for cid, _ in fresh])
                fresh = [f for f in fresh if f[0] not in earlier]
            found += fresh
            if len(found) > limit:
                return found[:limit], found[limit - 1][1], scanned, False
            if len(rows) < chunk:
                return found, None, scanned, False
            position = (rows[-1][1], rows[-1][2])
            if scanned >= scan_limit:
                return found, position, scanned, True
            chunk = min(chunk * 4, _MAX_CHUNK)


def page_calls(
    store: Store,
    q: MessageQuery,
    limit: int = 50,
    cursor: Cursor | None = None,
    scan_limit: int = SCAN_LIMIT,
) -> CallPage:
    """One page of calls with at least one matching message, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"limit {limit}: give 1 to {MAX_PAGE} calls per page")
    found, next_cursor, scanned, truncated = find_call_ids(store, q, limit, cursor, scan_limit)
    by_call: dict[str, list[Message]] = {cid: [] for cid, _ in found}
    for msg in store.messages_of_calls(list(by_call)):
        by_call[msg.call_id].append(msg)
    calls = [summarise_call(msgs) for msgs in by_call.values() if msgs]
    return CallPage(calls, next_cursor, scanned, truncated)
