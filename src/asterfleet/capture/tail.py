"""The Calls list's live tail: the calls stored since a position, each call
opening sent once, in the order their batches became visible.

A position is text the console hands the browser (the SSE ``id:``, sent
back as ``Last-Event-ID`` on a reconnect).

- **SQLite** has one writer at a time (a collector runs one writer
  process for it, and SQLite's write lock serialises any others): a
  message's id is given inside the write transaction, so ids are in commit
  order, and the position is the id of the last opening sent. (An id above
  every stored one means another store, or this one emptied: SQLite then
  gives ids from 1 again.)
- **PostgreSQL** has several writers (four per collector, and collectors
  may share a store). Ids come from one sequence as rows are copied in,
  but each writer commits when its batch is done: a batch with lower ids
  can become visible after one with higher ids, and a tail that went by ids
  would skip it. So the position is a set of *transactions*, not an id:
  the transactions the tail is done with, written like PostgreSQL's own
  snapshot (:class:`Snapshot`: every transaction id below ``xmax`` but the
  ones in ``xip``). Each batch's transaction, and the range of ids it
  holds, are in the batch log (``capture_batches``, written by the batch's
  own transaction: see :meth:`Store.insert_rows`). A poll reads, in one
  statement, PostgreSQL's current snapshot and the logged batches that are
  visible in it but not done in the position (``xact >= xmax OR xact =
  ANY(xip)``: two index look-ups, however old the oldest running
  transaction); then each batch's openings (its id range, filtered to its
  transaction by the rows' ``xmin``); then moves on to that snapshot.
  A transaction still running at the poll stays in ``xip`` and is listed
  when it commits; one that aborts logged nothing. Transactions of the
  server's other databases are left out (they log no batch here).

The work of a poll is bounded: at most :data:`MAX_BATCHES` batches and
``limit`` openings. A poll that stops short ends inside the batches it
read, in transaction order (:func:`advance`), part way through one batch
at most (its progress is kept in the position, ``sent``). The position also
says when it was taken: the batch log forgets batches after
:data:`~asterfleet.capture.store.BATCH_IDS_KEPT_S`, so a position older
than that, less a margin, could miss calls: the tail then starts again
from now and says so (``restarted``), as it does for a position it cannot
read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asterfleet.capture.pager import conditions
from asterfleet.capture.search import CallSummary, MessageQuery, summarise_call
from asterfleet.capture.store import BATCH_IDS_KEPT_S, DAY_US, Message, Store

if TYPE_CHECKING:
    import sqlalchemy as sa

#: Batches a poll reads at most: a tail behind by more catches up over polls.
MAX_BATCHES = 256
#: A position is used while younger than the batch log's memory less this.
KEPT_MARGIN_S = 600.0
#: Longest position text read (a snapshot of a busy server lists the
#: transactions running on it: a few hundred at most).
MAX_POSITION_CHARS = 16_384

_UINT = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Transactions by id (``xid8``): every one below ``xmax`` but those in
    ``xip`` (PostgreSQL's ``pg_snapshot``, whose ``xmin`` is the smallest of
    ``xip``, or ``xmax``)."""

    xmax: int
    xip: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if list(self.xip) != sorted(set(self.xip)) or any(x >= self.xmax for x in self.xip):
            raise ValueError(f"not a snapshot: xmax {self.xmax}, xip {self.xip}")

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """PostgreSQL's text of a ``pg_snapshot``: ``xmin:xmax:xip,xip``."""
        xmin, xmax, xip = text.split(":")
        running = tuple(int(x) for x in xip.split(",") if x)
        snap = cls(int(xmax), running)
        if int(xmin) != (running[0] if running else snap.xmax):
            raise ValueError(f"not a snapshot: {text!r}")
        return snap


@dataclass(frozen=True, slots=True)
class Position:
    """Where a PostgreSQL tail is: the batches of ``done``'s transactions
    are sent, and of the batch of each ``(xact, id)`` in ``sent`` (a
    transaction in ``done.xip``) its openings up to that id. ``taken_us``:
    when the oldest batch not yet sent could have been logged, at the
    earliest (µs, the database's clock)."""

    taken_us: int
    done: Snapshot
    sent: tuple[tuple[int, int], ...] = field(default=())

    def encode(self) -> str:
        """``taken:xmax:xip,xip:xact.id,xact.id`` (a colon in it tells it
        from SQLite's positions)."""
        xip = ",".join(map(str, self.done.xip))
        sent = ",".join(f"{x}.{i}" for x, i in self.sent)
        return f"{self.taken_us}:{self.done.xmax}:{xip}:{sent}"

    @classmethod
    def decode(cls, text: str) -> Position:
        """The position :meth:`encode` gave; ValueError for anything else."""
        if len(text) > MAX_POSITION_CHARS:
            raise ValueError("too long")
        taken, xmax, xip, sent = text.split(":")
        numbers = [taken, xmax, *(x for x in xip.split(",") if xip)]
        pairs = [p.split(".") for p in sent.split(",") if sent]
        if not all(
            _UINT.fullmatch(n) and int(n) < 1 << 63 for n in numbers + [n for p in pairs for n in p]
        ):
            raise ValueError("not numbers PostgreSQL takes")
        if any(len(p) != 2 for p in pairs):
            raise ValueError("not pairs")
        done = Snapshot(int(xmax), tuple(int(x) for x in xip.split(",") if xip))
        progress = tuple((int(x), int(i)) for x, i in pairs)
        if any(x not in done.xip for x, _ in progress) or len({x for x, _ in progress}) != len(
            progress
        ):
            raise ValueError("progress of a batch that is not pending")
        return cls(int(taken), done, progress)


def advance(
    prev: Position, now: Snapshot, now_us: int, stop: int | None, stop_id: int | None
) -> Position:
    """Where a tail at ``prev`` is after a poll that read PostgreSQL's
    snapshot ``now`` and sent, in transaction order, every batch visible in
    ``now`` and not done in ``prev``, up to the batch of transaction
    ``stop`` (None: all of them), of which it sent the openings up to
    ``stop_id`` (None: all).

    Stopped at ``stop``: done are ``prev``'s transactions and every one up
    to ``stop`` that is not running in ``now`` (a running one is listed
    when it commits), less ``stop`` itself when only part of it was sent;
    the others stay as ``prev`` had them. Not stopped: ``now`` itself.
    """
    if stop is None:
        return Position(now_us, now)
    xmax = max(prev.done.xmax, stop + 1)
    running = {x for x in prev.done.xip if x > stop} | {x for x in now.xip if x < stop}
    sent = [(x, i) for x, i in prev.sent if x > stop]
    if stop_id is not None:
        running.add(stop)
        sent.append((stop, stop_id))
    return Position(prev.taken_us, Snapshot(xmax, tuple(sorted(running))), tuple(sorted(sent)))


@dataclass(frozen=True, slots=True)
class TailStep:
    """One poll of the live tail: the calls to send, where to go on from,
    and why the tail started again from now ("" when it went on)."""

    calls: list[CallSummary]
    position: str
    restarted: str = ""


def tail_start(store: Store) -> str:
    """The position of a tail starting now: the calls stored from now on."""
    if store.dialect == "postgresql":
        with store.reading() as conn:
            snap, now_us, elsewhere = conn.exec_driver_sql(_NOW_PG).one()
        return Position(int(now_us), _ours(snap, elsewhere)).encode()
    import sqlalchemy as sa

    from asterfleet.capture.tables import messages

    c = messages.c
    with store.reading() as conn:
        value = conn.execute(sa.select(sa.func.max(c.id)).where(c.opens_call == sa.true())).scalar()
    return str(int(value or 0))


def tail_calls(store: Store, q: MessageQuery, position: str, limit: int = 50) -> TailStep:
    """Calls opened (stored) after ``position`` that match ``q``: the calls
    of at most ``limit`` openings a poll, batch by batch. A position that
    cannot be used (not one :func:`tail_start` or this function gave for
    this kind of store, older than the batch log remembers, ahead of the
    database) starts the tail again from now."""
    if store.dialect == "postgresql":
        return _tail_pg(store, q, position, limit)
    if not _UINT.fullmatch(position) or int(position) >= 1 << 63:
        return TailStep([], tail_start(store), _unreadable(position))
    return _tail_by_id(store, q, int(position), limit)


_AHEAD = (
    "position is ahead of this capture store (emptied, restored or replaced?): "
    "the live tail goes on from now"
)


def _unreadable(position: str) -> str:
    shown = position if len(position) <= 40 else position[:40] + "…"
    return (
        f"position {shown!r} is not one this console gave for this capture store: "
        "the live tail goes on from now (reload the page for the calls in between)"
    )


def _tail_by_id(store: Store, q: MessageQuery, after_id: int, limit: int) -> TailStep:
    """SQLite: the openings above ``after_id``, in id order (commit order)."""
    import sqlalchemy as sa

    from asterfleet.capture.tables import messages

    c = messages.c
    query = (
        sa.select(c.call_id, c.id)
        .where(*conditions(q, store.dialect), c.id > after_id)
        .order_by(c.id)
        .limit(limit)
    )
    with store.reading() as conn:
        rows = conn.execute(query).all()
        if not rows:
            # Ids above any stored: a position from another store, or this
            # one emptied (SQLite then gives ids from 1 again).
            newest = conn.execute(sa.select(sa.func.max(c.id))).scalar()
            if after_id > int(newest or 0):
                return TailStep([], tail_start(store), _AHEAD)
            return TailStep([], str(after_id))
    return TailStep(_summaries(store, [r[0] for r in rows]), str(int(rows[-1][1])))


def _summaries(store: Store, call_ids: list[str]) -> list[CallSummary]:
    ids = list(dict.fromkeys(call_ids))
    by_call: dict[str, list[Message]] = {cid: [] for cid in ids}
    for msg in store.messages_of_calls(ids):
        by_call[msg.call_id].append(msg)
    return [summarise_call(m) for m in by_call.values() if m]


#: The transactions running in the server's other databases (32-bit ids,
#: as ``pg_stat_activity`` has them; hidden without the right to read
#: others' statistics): they write no batch here, so a position leaves
#: them out (a snapshot lists every database's: on a shared server many,
#: and some for long).
_ELSEWHERE = """ARRAY(
    SELECT backend_xid::text FROM pg_stat_activity
    WHERE backend_xid IS NOT NULL
      AND datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))"""
#: PostgreSQL's snapshot now, the time on its clock (µs), and the
#: transactions running elsewhere.
_NOW_PG = f"""
SELECT pg_current_snapshot()::text,
       (extract(epoch FROM statement_timestamp()) * 1000000)::bigint,
       {_ELSEWHERE}
"""
#: The same, with the logged batches it sees that a position has not done
#: (one statement: one snapshot), in transaction order.
_BATCHES_PG = f"""
SELECT pg_current_snapshot()::text,
       (extract(epoch FROM statement_timestamp()) * 1000000)::bigint,
       {_ELSEWHERE},
       b.xact::text, b.ids_above, b.last_id, b.first_day, b.last_day
FROM (SELECT 1) AS one LEFT JOIN LATERAL (
    SELECT xact, ids_above, last_id, first_day, last_day FROM capture_batches
    WHERE xact >= %s::xid8 OR xact = ANY(%s::xid8[])
    ORDER BY xact LIMIT %s
) AS b ON true
"""


def _ours(snapshot: str, elsewhere: list[str]) -> Snapshot:
    """PostgreSQL's snapshot without the transactions of other databases
    (a running transaction's 32-bit id names it: they are all within 2³¹
    of each other)."""
    snap = Snapshot.parse(snapshot)
    other = {int(x) for x in elsewhere}
    return Snapshot(snap.xmax, tuple(x for x in snap.xip if (x & 0xFFFF_FFFF) not in other))


#: How a poll reads its batches' openings: along the id index (see
#: :func:`_tail_pg`), and not compiled (small look-ups that an estimate
#: without statistics can make look big: compiling would cost more).
_BY_ID = ("SET LOCAL enable_sort = off", "SET LOCAL jit = off")


@dataclass(frozen=True, slots=True)
class _Batch:
    xact: int
    ids_above: int | None
    last_id: int | None
    first_day: int | None
    last_day: int | None


def _tail_pg(store: Store, q: MessageQuery, text: str, limit: int) -> TailStep:
    try:
        prev = Position.decode(text)
    except ValueError:
        return TailStep([], tail_start(store), _unreadable(text))
    # One transaction for the poll (each statement still sees the commits
    # before it). Its batches' openings must be read along the id index: a
    # day partition not yet analysed can look cheaper to walk by time (its
    # whole day so far, for each batch). With sorts ruled out (after the
    # batches are listed), only the id index gives the order asked for.
    with store.engine.connect() as conn, conn.begin():
        rows = conn.exec_driver_sql(
            _BATCHES_PG, (str(prev.done.xmax), [str(x) for x in prev.done.xip], MAX_BATCHES + 1)
        ).all()
        for sql in _BY_ID:
            conn.exec_driver_sql(sql)
        now = _ours(rows[0][0], rows[0][2])
        now_us = int(rows[0][1])
        fresh = Position(now_us, now).encode()
        if prev.done.xmax > now.xmax:
            return TailStep([], fresh, _AHEAD)
        if now_us - prev.taken_us > (BATCH_IDS_KEPT_S - KEPT_MARGIN_S) * 1_000_000:
            return TailStep(
                [], fresh, "the live tail was away longer than the capture store remembers "
                "its batches: it goes on from now (reload the page for the calls in between)",
            )  # fmt: skip
        batches = [_Batch(int(r[3]), *r[4:]) for r in rows if r[3] is not None]
        listed_all = len(batches) <= MAX_BATCHES
        batches = batches[:MAX_BATCHES]
        progress = dict(prev.sent)
        found: list[str] = []
        stop: int | None = None
        stop_id: int | None = None
        for batch in batches:
            if batch.ids_above is None or batch.last_id is None:
                continue  # logged by a writer of an earlier version: no range
            above = max(batch.ids_above, progress.get(batch.xact, batch.ids_above))
            room = limit - len(found)
            openings = conn.execute(_openings(store, q, batch, above, room + 1)).all()
            if len(openings) > room:
                found += [r[0] for r in openings[:room]]
                stop, stop_id = batch.xact, (int(openings[room - 1][1]) if room else above)
                break
            found += [r[0] for r in openings]
        else:
            if not listed_all and batches:
                stop = batches[-1].xact
    position = advance(prev, now, now_us, stop, stop_id).encode()
    return TailStep(_summaries(store, found) if found else [], position)


def _openings(store: Store, q: MessageQuery, batch: _Batch, above: int, limit: int) -> Any:
    """The openings of ``batch`` above id ``above`` matching ``q``, by id."""
    import sqlalchemy as sa

    from asterfleet.capture.tables import messages

    c = messages.c
    where: list[sa.ColumnElement[bool]] = [
        *conditions(q, store.dialect),
        c.id > above,
        c.id <= batch.last_id,
        # Its own rows: others' ids interleave with its (a row's xmin is
        # the 32-bit transaction id that wrote it).
        sa.literal_column(f"sip_messages.xmin = '{batch.xact & 0xFFFF_FFFF}'::xid", sa.Boolean),
    ]
    if batch.first_day is not None and batch.last_day is not None:
        # Its days' partitions only.
        where += [c.ts_us >= batch.first_day * DAY_US, c.ts_us < (batch.last_day + 1) * DAY_US]
    return sa.select(c.call_id, c.id).where(*where).order_by(c.id).limit(limit)
