"""Calls one page at a time, by start, newest first, on large tables: the one
search path of the Calls page, the calls API and ``asterfleet capture
search``.

``GROUP BY call_id`` over the whole table reads every matching row before
it can answer; on millions of messages that is seconds. Instead the
messages that open a call (requests without a To tag, flagged
``opens_call`` when captured) are walked newest first along a partial
``ts_us`` index (or the From/To/Call-ID index when that filter is more
selective) and distinct Call-IDs collected until the page is full, so the
work is proportional to the page, not to the table. On PostgreSQL the walk
goes back in time slices aligned to the day partitions (the newest day or
two first), so each query is planned and run on the partitions of its slice
only: one walk over every partition at once (a merge of each one's newest
matches) costs a start in every partition, and more the more days are kept.
The opening's Call-ID, users and time are filtered on directly; filters on
the rest of the call (a method, a status, a capture host, a status class,
text) are ``EXISTS`` lookups along the Call-ID index, for the calls the
walk meets.

Calls are ordered by their newest opening (the INVITE captured on the last
hop, a few milliseconds after the call started). A page's cursor is the
``(ts_us, id)`` of the last call on it; the next page walks from there and
drops calls that also have an opening above the cursor (they were on an
earlier page). The walk is bounded: when it reads ``scan_limit`` rows
without filling the page it stops, returns what it found and a cursor to go
on from, and says so. Calls whose opening was never captured are not
listed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asterfleet.capture.search import (
    CallSummary,
    MessageQuery,
    Party,
    Tenure,
    escape_like,
    summarise_call,
    where_message,
)
from asterfleet.capture.store import DAY_US, Message, Store
from asterfleet.errors import UsageError

if TYPE_CHECKING:
    import sqlalchemy as sa

# SQLAlchemy and the tables are imported by the functions that build the
# walk's queries: a lookup by Call-ID alone needs neither (the whole
# `capture search --call-id` command starts without them).

MAX_PAGE = 500
SCAN_LIMIT = 200_000
_FIRST_CHUNK = 64
_MAX_CHUNK = 16_384
#: A partitioned store is walked in time slices, newest first: at least
#: this much before the walk's top, to a day's start (one or two day
#: partitions), then twice as far back each time, and whatever is older
#: than :data:`_SLICES_UP_TO` in one last unbounded step.
_FIRST_SLICE_US = DAY_US // 4
_SLICES_UP_TO = 8 * DAY_US
#: How far before a call's opening its messages are looked for by the
#: filters on the whole call (capture hosts' clocks differ a little).
CALL_SKEW_US = 3_600_000_000

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


STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "none")


def conditions(
    q: MessageQuery, dialect: str, messages_since: int | None = None
) -> list[sa.ColumnElement[bool]]:
    """Every filter of the search: on the opening message itself, and on
    the rest of its call (see :func:`opening_conditions`, :func:`call_conditions`)."""
    return [*opening_conditions(q, dialect), *call_conditions(q, dialect, messages_since)]


def opening_conditions(q: MessageQuery, dialect: str) -> list[sa.ColumnElement[bool]]:
    """The search's filters on a call's opening message, plus index ranges
    for prefixes where the engine needs them.

    SQLite does not turn ``LIKE 'abc%'`` into an index range (its LIKE is
    case-insensitive, the index is not), so the equivalent range is added:
    the prefix match becomes case-sensitive there, as it is on PostgreSQL.
    """
    import sqlalchemy as sa

    from asterfleet.capture.tables import messages

    c = messages.c
    # Written as the partial index's own predicate, so the planner can use it.
    conds: list[sa.ColumnElement[bool]] = [c.opens_call == sa.true(), *where_message(q, dialect)]
    if not (q.options or q.call_id or (q.method or "").upper() == "OPTIONS"):
        # The balancers' keep-alive probes: 40 % of the rows, no one's call.
        conds.append(c.method != "OPTIONS")
    if dialect == "sqlite":
        for column, prefix in (
            (messages.c.from_user, q.from_user),
            (messages.c.to_user, q.to_user),
        ):
            if prefix:
                conds += [column >= prefix, column < prefix_upper_bound(prefix)]
    return conds


def call_conditions(
    q: MessageQuery, dialect: str, messages_since: int | None = None
) -> list[sa.ColumnElement[bool]]:
    """The search's filters on the rest of a call, for its opening message
    (a method, a status, a capture host, an answer class, text, MOS, a
    node or balancer, a duration): a look-up along the Call-ID index each.

    They look at the call's messages from :data:`CALL_SKEW_US` before the
    opening on (a call's messages follow its first opening; a Call-ID
    reused later, as REGISTER refreshes do, is matched by the opening of
    each use). ``messages_since`` says the same to the planner as a
    constant, for a walk whose openings are all at or after
    ``messages_since + CALL_SKEW_US``: it then reads only the partitions
    from there on.
    """
    import sqlalchemy as sa

    from asterfleet.capture.tables import messages, rtcp_reports, same_call

    c = messages.c
    conds: list[sa.ColumnElement[bool]] = []
    other = messages.alias("other")
    o = other.c

    since = [] if messages_since is None else [o.ts_us >= messages_since]

    def in_call(*where: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
        # OFFSET 0 keeps it a lookup per opening the walk meets (PostgreSQL
        # would otherwise turn it into a join over every message in range).
        return (
            sa.select(sa.literal(1))
            .where(
                same_call(o.call_id, c.call_id, dialect),
                # `+ 0`: a filter on the call's few rows, not an index range
                # (PostgreSQL would AND a BRIN range of every page since
                # then to the Call-ID's few rows, once per opening).
                o.ts_us + 0 >= c.ts_us - CALL_SKEW_US,
                *since,
                *where,
            )
            .offset(0)
            .exists()
        )

    if q.method:
        conds.append(in_call(o.method == q.method.upper()))
    if q.status is not None:
        conds.append(in_call(o.status == q.status))
    if q.capture_host:
        host = o.capture_host == q.capture_host
        if q.capture_host.isdigit():
            host = sa.or_(host, o.capture_id == int(q.capture_host))
        conds.append(in_call(host))
    if q.status_class:
        # An answer of that class to the request that opened the call (a
        # call challenged with 407, then answered, is both 4xx and 2xx).
        to_opening = o.cseq.like(sa.literal("% ").concat(c.method))
        if q.status_class == "none":
            conds.append(~in_call(o.status >= 200, to_opening))
        else:
            low = int(q.status_class[0]) * 100
            conds.append(in_call(o.status.between(low, low + 99), to_opening))
    if q.text:
        # Raw messages are bytes: a byte-string search, case-sensitive on both engines.
        if dialect == "sqlite":
            needle = sa.literal(q.text.encode(), sa.LargeBinary)
            conds.append(in_call(sa.func.instr(o.raw, needle) > 0))
        else:
            # Backslash is LIKE's default escape; an ESCAPE clause would have
            # to be bytea itself, where a lone backslash is not valid input.
            pattern = b"%" + escape_like(q.text).encode() + b"%"
            conds.append(in_call(o.raw.like(sa.literal(pattern, sa.LargeBinary))))
    if q.mos_below is not None:
        r = rtcp_reports.c
        conds.append(sa.exists().where(r.call_id == c.call_id, r.mos < q.mos_below))
    for party in (q.node, q.balancer):
        if party is not None:
            conds.append(in_call(party_condition(o, party)))
    if q.min_duration_us is not None or q.max_duration_us is not None:
        # First to last message, as the Calls list shows it (two look-ups
        # along the Call-ID index for the calls the walk meets).
        span = messages.alias("span").c
        lasted = (
            sa.select(sa.func.max(span.ts_us) - sa.func.min(span.ts_us))
            .where(same_call(span.call_id, c.call_id, dialect))
            .scalar_subquery()
        )
        if q.min_duration_us is not None:
            conds.append(lasted >= q.min_duration_us)
        if q.max_duration_us is not None:
            conds.append(lasted <= q.max_duration_us)
    return conds


def party_condition(o: Any, party: Party) -> sa.ColumnElement[bool]:
    """A message sent from or to one of the party's addresses, or captured
    with one of its capture ids, while the party held it (``o``: the
    columns of a messages alias)."""
    import sqlalchemy as sa

    def during(tenure: Tenure) -> list[sa.ColumnElement[bool]]:
        return [
            *([] if tenure.since_us is None else [o.ts_us >= tenure.since_us]),
            *([] if tenure.until_us is None else [o.ts_us < tenure.until_us]),
        ]

    either: list[sa.ColumnElement[bool]] = []
    for address, tenure in party.addresses:
        host, sep, port = address.rpartition(":")
        if sep and port.isdigit() and host:
            host = host.strip("[]")
            at = sa.or_(
                sa.and_(o.src_ip == host, o.src_port == int(port)),
                sa.and_(o.dst_ip == host, o.dst_port == int(port)),
            )
        else:
            at = sa.or_(o.src_ip == address, o.dst_ip == address)
        either.append(sa.and_(at, *during(tenure)))
    for capture_id, tenure in party.capture_ids:
        either.append(sa.and_(o.capture_id == capture_id, *during(tenure)))
    return sa.or_(*either) if either else sa.false()


def _below(cursor: Cursor) -> sa.ColumnElement[bool]:
    import sqlalchemy as sa

    from asterfleet.capture.tables import messages

    ts, ident = cursor
    c = messages.c
    # Written so that ``ts_us <= ts`` stays an index range on both engines.
    return sa.and_(c.ts_us <= ts, sa.or_(c.ts_us < ts, c.id < ident))


def walk_query(
    conds: Sequence[sa.ColumnElement[bool]],
    cursor: Cursor | None,
    chunk: int,
    passes: Sequence[sa.ColumnElement[bool]] = (),
) -> Any:
    """One chunk of the walk: matching messages below ``cursor``, newest
    first; with ``passes``, a fourth column says whether each one passes
    them (they are evaluated for the rows of the chunk only)."""
    import sqlalchemy as sa

    from asterfleet.capture.tables import messages

    c = messages.c
    where = [*conds, _below(cursor)] if cursor else list(conds)
    columns: list[Any] = [c.call_id, c.ts_us, c.id]
    if passes:
        columns.append(sa.and_(*passes).label("passes"))
    return sa.select(*columns).where(*where).order_by(c.ts_us.desc(), c.id.desc()).limit(chunk)


def _seen_above(
    conn: sa.Connection, conds: Sequence[sa.ColumnElement[bool]], cursor: Cursor, ids: list[str]
) -> set[str]:
    """Which of ``ids`` have a matching message at or above ``cursor``."""
    import sqlalchemy as sa

    from asterfleet.capture.tables import in_calls, messages

    c = messages.c
    ts, ident = cursor
    above = sa.or_(c.ts_us > ts, sa.and_(c.ts_us == ts, c.id >= ident))
    mine = in_calls(c.call_id, ids, conn.dialect.name)
    query = sa.select(c.call_id).where(mine, *conds, above).distinct()
    return {row[0] for row in conn.execute(query)}


def find_call_ids(
    store: Store,
    q: MessageQuery,
    limit: int,
    cursor: Cursor | None = None,
    scan_limit: int = SCAN_LIMIT,
    conn: sa.Connection | None = None,
) -> tuple[list[tuple[str, Cursor]], Cursor | None, int, bool]:
    """Up to ``limit`` Call-IDs below ``cursor`` with each one's newest match,
    the cursor for the next page, rows scanned, and whether the bound hit
    (on ``conn``, a :meth:`Store.reading` connection, when given)."""
    if conn is None:
        with store.reading() as own:
            return find_call_ids(store, q, limit, cursor, scan_limit, own)
    from asterfleet.capture.tables import messages

    found: list[tuple[str, Cursor]] = []
    seen: set[str] = set()
    # A call has an opening per hop (two through a balancer): the first
    # chunk usually fills the page, and the walk grows when filters reject.
    position, scanned, chunk = cursor, 0, max(_FIRST_CHUNK, 2 * limit + 8)
    floor = first_slice_floor(q, cursor, store.partitioned)
    span = DAY_US
    while True:
        # Filters on the rest of the call are a column, not a condition:
        # a chunk is a bounded read even when (almost) no call passes.
        conds = opening_conditions(q, store.dialect)
        if floor is None:
            passes = call_conditions(q, store.dialect)
        else:
            passes = call_conditions(q, store.dialect, floor - CALL_SKEW_US)
            conds.append(messages.c.ts_us >= floor)
        rows = conn.execute(walk_query(conds, position, chunk, passes)).all()
        scanned += len(rows)
        fresh: list[tuple[str, Cursor]] = []
        for row in rows:
            call_id, ts, ident = row[0], row[1], row[2]
            if call_id not in seen and (not passes or row[3]):
                seen.add(call_id)
                fresh.append((call_id, (ts, ident)))
        if cursor is not None and fresh:
            ids = [cid for cid, _ in fresh]
            earlier = _seen_above(conn, [*conds, *passes], cursor, ids)
            fresh = [f for f in fresh if f[0] not in earlier]
        found += fresh
        if len(found) > limit:
            return found[:limit], found[limit - 1][1], scanned, False
        if len(rows) == chunk:  # more in this slice
            position = (rows[-1][1], rows[-1][2])
            if scanned >= scan_limit:
                return found, position, scanned, True
            chunk = next_chunk(chunk, scanned, len(found), limit)
            continue
        if floor is None:  # the last slice is read: nothing older matches
            return found, None, scanned, False
        position = (floor, 0)  # below the slice just read (ids start at 1)
        floor = next_slice_floor(floor, span, q.since_us)
        span *= 2


def next_chunk(chunk: int, scanned: int, found: int, limit: int) -> int:
    """The next chunk of the walk: what the page still needs at the rate
    calls were found so far, a quarter more (four times the last chunk when
    none was found yet), within :data:`_MAX_CHUNK`."""
    if not found:
        return min(chunk * 4, _MAX_CHUNK)
    wanted = int((limit + 1 - found) * scanned / found * 1.25) + 1
    return max(_FIRST_CHUNK, min(wanted, chunk * 4, _MAX_CHUNK))


def first_slice_floor(q: MessageQuery, cursor: Cursor | None, partitioned: bool) -> int | None:
    """Where the walk's first time slice starts (None: no slices, one walk):
    a day's start at least :data:`_FIRST_SLICE_US` below the top of the walk
    (the cursor, the end of the time range, or now)."""
    if not partitioned:
        return None
    tops = [t for t in (cursor[0] if cursor else None, q.until_us) if t is not None]
    top = min(tops) if tops else int(time.time() * 1_000_000)
    floor = (top - _FIRST_SLICE_US) // DAY_US * DAY_US
    return None if q.since_us is not None and q.since_us >= floor else floor


def next_slice_floor(floor: int, span: int, since_us: int | None) -> int | None:
    """The start of the slice below ``floor``, ``span`` long (None: the rest)."""
    lower = floor - span
    if span > _SLICES_UP_TO or (since_us is not None and since_us >= lower):
        return None
    return lower


def _one_call(store: Store, call_id: str) -> CallPage:
    """A lookup by Call-ID alone: the call's messages in one query (what the
    walk would find, listed only when an opening was captured)."""
    msgs = store.messages_of_calls([call_id])
    openings = sum(1 for m in msgs if m.opens_call)
    calls = [summarise_call(msgs)] if openings else []
    return CallPage(calls, None, openings, False)


def page_calls(
    store: Store,
    q: MessageQuery,
    limit: int = 50,
    cursor: Cursor | None = None,
    scan_limit: int = SCAN_LIMIT,
) -> CallPage:
    """One page of calls matching ``q``, by start, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise UsageError(f"limit {limit}: give 1 to {MAX_PAGE} calls per page")
    if cursor is None and q.call_id and MessageQuery(call_id=q.call_id, limit=q.limit) == q:
        return _one_call(store, q.call_id)
    # One connection for the walk and the page's messages (one checkout).
    with store.reading() as conn:
        found, next_cursor, scanned, truncated = find_call_ids(
            store, q, limit, cursor, scan_limit, conn
        )
        by_call: dict[str, list[Message]] = {cid: [] for cid, _ in found}
        for msg in store.messages_of_calls(list(by_call), conn):
            by_call[msg.call_id].append(msg)
    calls = [summarise_call(msgs) for msgs in by_call.values() if msgs]
    return CallPage(calls, next_cursor, scanned, truncated)
