"""Find captured messages and group them into calls.

Used by ``asterfleet capture search`` and by the console's Calls page;
calls are found a page at a time by :mod:`asterfleet.capture.pager`.
:func:`summarise_call` is pure; the query functions take a :class:`Store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from asterfleet.capture.flow import merge_copies
from asterfleet.capture.store import COLUMNS, DAY_US, Message, Store, parse_duration
from asterfleet.errors import UsageError

if TYPE_CHECKING:
    import sqlalchemy as sa

# SQLAlchemy is imported by the queries that build on it: summing up a call
# (and the Call-ID lookup, see pager) needs none of it.


@dataclass(frozen=True)
class Tenure:
    """While a member held an address or a capture id: messages stamped
    from ``since_us`` up to (not including) ``until_us``; None is unbounded."""

    since_us: int | None = None
    until_us: int | None = None


#: Held for all time: an address with no recorded history.
ALWAYS = Tenure()


@dataclass(frozen=True)
class Party:
    """Where a member of the fleet shows in captures: the addresses it held
    (``host:port``, or a bare IP: any port) and the HEP capture ids it sends,
    each with when it held them (an address reused by a later box belongs
    to that box from then on). ``name`` is for messages only; the console
    resolves it."""

    name: str
    addresses: tuple[tuple[str, Tenure], ...] = ()
    capture_ids: tuple[tuple[int, Tenure], ...] = ()


@dataclass(frozen=True)
class MessageQuery:
    """Filters; every one given must match. Users match by prefix."""

    call_id: str | None = None
    from_user: str | None = None
    to_user: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    method: str | None = None
    status: int | None = None
    #: A capture host: its HEP capture name, or its capture id.
    capture_host: str | None = None
    limit: int = 100
    # Call filters (the Calls list, the calls API and ``capture search``):
    #: ``2xx`` … ``6xx``: the call has an answer of that class; ``none``: no final answer.
    status_class: str | None = None
    #: Text anywhere in one of the call's messages (headers and body).
    text: str | None = None
    #: List calls opened by OPTIONS (the balancers' probes), hidden otherwise.
    options: bool = False
    #: Calls with a stream whose estimated MOS (RTCP, see capture.rtcp; as stored,
    #: at the codec's RTP clock: capture.mediaclock) fell below this.
    mos_below: float | None = None
    #: Calls with a message from or to this node (its addresses over time).
    node: Party | None = None
    #: Calls a balancer captured or relayed (its capture ids, its addresses).
    balancer: Party | None = None
    #: Calls that lasted at least / at most this long (from their opening, as captured).
    min_duration_us: int | None = None
    max_duration_us: int | None = None


@dataclass(frozen=True)
class CallSummary:
    """One call (all messages sharing a Call-ID), as the Calls list shows it."""

    call_id: str
    start_us: int
    end_us: int
    method: str
    from_user: str
    to_user: str
    final_status: int | None
    #: The node that took the call: the host that first sent the final answer.
    node: str | None
    messages: int
    capture_hosts: tuple[str, ...]
    #: Captures of a message that another capture host also reported (shown once).
    duplicates: int = 0
    #: ``ringing`` (no final answer yet), ``in progress`` (answered, no BYE),
    #: ``ended``, ``failed`` (a final answer of 300 or more), ``cancelled``,
    #: ``done`` / ``pending`` (a transaction outside a call: OPTIONS, REGISTER, …).
    state: str = "done"

    @property
    def in_progress(self) -> bool:
        return self.state in ("ringing", "in progress")

    @property
    def duration_s(self) -> float:
        return (self.end_us - self.start_us) / 1_000_000

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_us / 1_000_000, UTC)

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "start": self.start.isoformat(),
            "start_us": self.start_us,
            "duration_s": round(self.duration_s, 6),
            "method": self.method,
            "from_user": self.from_user,
            "to_user": self.to_user,
            "final_status": self.final_status,
            "node": self.node,
            "messages": self.messages,
            "capture_hosts": list(self.capture_hosts),
            "duplicates": self.duplicates,
            "state": self.state,
            "in_progress": self.in_progress,
        }


def duration_us(text: str | None, what: str) -> int | None:
    """A duration filter (``90``, ``30s``, ``2m``) in µs; None when not given;
    bad input names the filter (``what``)."""
    if text is None or not text.strip():
        return None
    try:
        return int(parse_duration(text) * 1_000_000)
    except UsageError:
        raise UsageError(
            f"{what} {text.strip()!r}: give seconds or a number with s, m or h (30s, 2m)"
        ) from None


def parse_time(text: str, now_us: int) -> int:
    """An ISO 8601 time, or a duration ago (``15m``, ``2h``), in µs since the epoch."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            ago_us = parse_duration(value) * 1_000_000
            if ago_us > now_us:  # before 1970: also 1e15d, which overflows the database
                raise UsageError(f"time {text!r} reaches back before 1970")
            return now_us - int(ago_us)
        except UsageError:
            raise UsageError(
                f"time {text!r}: give ISO 8601 (2024-05-01T12:00:00) or an age like 15m, 2h, 1d"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def where_message(q: MessageQuery, dialect: str) -> list[sa.ColumnElement[bool]]:
    """The conditions on one message's own fields (Call-ID, users, time),
    shared by the message search and the call pager."""
    from asterfleet.capture.tables import messages, same_call

    c = messages.c
    conds: list[sa.ColumnElement[bool]] = []
    if q.call_id:
        conds.append(same_call(c.call_id, q.call_id, dialect))
    if q.from_user:
        conds.append(c.from_user.like(escape_like(q.from_user) + "%", escape="\\"))
    if q.to_user:
        conds.append(c.to_user.like(escape_like(q.to_user) + "%", escape="\\"))
    if q.since_us is not None:
        conds.append(c.ts_us >= q.since_us)
    if q.until_us is not None:
        conds.append(c.ts_us <= q.until_us)
    return conds


def _where(q: MessageQuery, dialect: str) -> list[sa.ColumnElement[bool]]:
    import sqlalchemy as sa

    from asterfleet.capture.tables import messages

    c = messages.c
    conds = where_message(q, dialect)
    if q.method:
        conds.append(c.method == q.method.upper())
    if q.status is not None:
        conds.append(c.status == q.status)
    if q.capture_host:
        cond = c.capture_host == q.capture_host
        if q.capture_host.isdigit():
            cond = sa.or_(cond, c.capture_id == int(q.capture_host))
        conds.append(cond)
    return conds


#: The message search's time slices on PostgreSQL (see :func:`message_slices`):
#: the first covers this much below the top, each next one
#: :data:`SLICE_GROWTH` times the one before, and once a slice would be
#: longer than :data:`SLICES_UP_TO` the last one takes everything older.
FIRST_SLICE_US = 1_000_000
SLICE_GROWTH = 4
SLICES_UP_TO = 64 * DAY_US

#: A slice of capture time: [low, high), None unbounded.
Slice = tuple[int | None, int | None]


def message_slices(top_us: int, since_us: int | None, until_us: int | None) -> list[Slice]:
    """Where the message search looks, newest first: slices of capture time
    below ``top_us`` (the newest call opening, or the end of the time
    range), the first one open upwards (messages stamped later, even in the
    future, are the newest), each next one longer, together covering
    exactly [since, until]."""
    high: int | None = None if until_us is None else until_us + 1
    low = top_us - FIRST_SLICE_US
    span = FIRST_SLICE_US
    out: list[Slice] = []
    while True:
        if since_us is not None and since_us >= low:
            out.append((since_us, high))
            return out
        if span > SLICES_UP_TO:
            out.append((since_us, high))
            return out
        out.append((low, high))
        high = low
        span *= SLICE_GROWTH
        low -= span


def search_messages(store: Store, q: MessageQuery) -> list[Message]:
    """Matching messages, newest first, at most ``q.limit``.

    On PostgreSQL capture time has only a BRIN index (cheap to keep at the
    collector's rate; see the store), which finds a range of time but
    gives no order: the search reads time slices newest first
    (:func:`message_slices`), each sorted on its own, until the limit is
    filled. A Call-ID has its own index and is one query.
    """
    import time

    import sqlalchemy as sa

    from asterfleet.capture.tables import messages

    c = messages.c
    cols = [c.id, *(c[name] for name in COLUMNS)]
    where = _where(q, store.dialect)

    def newest(limit: int, *bounds: sa.ColumnElement[bool]) -> list[Message]:
        query = (
            sa.select(*cols)
            .where(*where, *bounds)
            .order_by(c.ts_us.desc(), c.id.desc())
            .limit(limit)
        )
        return store.select(query)

    if not store.partitioned or q.call_id:
        return newest(q.limit)
    top = q.until_us
    if top is None:
        # The newest call opening (its own index answers): the first slice
        # is open upwards, so what came after it is in there too.
        with store.reading() as conn:
            top = conn.execute(
                sa.select(sa.func.max(c.ts_us)).where(c.opens_call == sa.true())
            ).scalar()
        if top is None:
            top = int(time.time() * 1_000_000)
    found: list[Message] = []
    for low, high in message_slices(top, q.since_us, q.until_us):
        bounds = [
            *([] if low is None else [c.ts_us >= low]),
            *([] if high is None else [c.ts_us < high]),
        ]
        found += newest(q.limit - len(found), *bounds)
        if len(found) >= q.limit:
            break
    return found


def call_messages(store: Store, call_id: str) -> list[Message]:
    """Every message of one call, in capture order."""
    return store.messages_of_calls([call_id])


def call_state(method: str, final_status: int | None, methods: set[str | None]) -> str:
    """Where a call stands, from its opening method, final answer and requests seen."""
    if method != "INVITE":
        return "done" if final_status is not None else "pending"
    if final_status is None:
        return "cancelled" if "CANCEL" in methods else "ringing"
    if final_status >= 300:
        return "cancelled" if final_status == 487 else "failed"
    return "ended" if "BYE" in methods else "in progress"


def summarise_call(msgs: Sequence[Message]) -> CallSummary:
    """Start, duration, final status and node of one call's messages.

    The final status is the last final answer to the INVITE (or to the
    first request, for calls without INVITE). The node is the host that
    first sent that answer: the leaf behind the balancer, since the
    balancer's own copy of the answer is captured after it.
    """
    # Copies merged (a message two capture hosts saw counts once); time order
    # is enough here, the causal order only matters for drawing.
    ordered = sorted((f.message for f in merge_copies(msgs)), key=lambda m: (m.ts_us, m.id))
    first = min(ordered, key=lambda m: (m.ts_us, m.id))
    requests = [m for m in ordered if m.method is not None]
    method = (
        "INVITE"
        if any(m.method == "INVITE" for m in requests)
        else (requests[0].method if requests and requests[0].method else first.label)
    )
    finals = [
        m
        for m in ordered
        if m.status is not None and m.status >= 200 and m.cseq.rpartition(" ")[2] == method
    ]
    final_status = finals[-1].status if finals else None
    node = next((m.src for m in finals if m.status == final_status), None)
    origin = requests[0] if requests else first
    capture_hosts = tuple(sorted({m.capture_host or str(m.capture_id) for m in msgs}))
    return CallSummary(
        call_id=first.call_id,
        start_us=first.ts_us,
        end_us=max(m.ts_us for m in msgs),
        method=method,
        from_user=origin.from_user,
        to_user=origin.to_user,
        final_status=final_status,
        node=node,
        messages=len(ordered),
        duplicates=len(msgs) - len(ordered),
        state=call_state(method, final_status, {m.method for m in requests}),
        capture_hosts=capture_hosts,
    )
