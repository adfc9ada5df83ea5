"""Each RTCP report's RTP clock rate, decided once, so that every reader of
a stream's MOS (the call page, the "MOS below" filter, the statistics and
their Prometheus metric, the CLI) reads the same figure.

RTCP jitter is in RTP timestamp units, and only the call's SDP answer tells
the rate (:mod:`asterfleet.capture.sdp`: 8,000 Hz for G.711 and G.722, 48,000
for opus). The report does not carry it, and the collector's writers store
a call's SIP messages and its RTCP reports in separate batches, possibly in
separate processes. So a writer looks the call's SDP up in the store when it
stores the call's first report (the INVITE and its answer were stored
seconds before the first RTCP report, which comes after media starts) and
keeps the answer in a small cache; the reports go in with ``clock_hz`` and
their jitter and MOS at that clock. A report stored before its call's answer
(a late SIP batch, a backlog, a store from before the column) is stored
with ``clock_hz`` NULL and its figures at 8,000 Hz; writer 0 looks at those
every :data:`PASS_EVERY_S` and rewrites them once the answer is there.

The clock of a call's reports (:func:`decide`):

- the SDP answer was captured: its codec's rate; ``0`` when it gives none
  (a dynamic payload type with no ``a=rtpmap``; 8,000 Hz assumed);
- only the offer, or no SDP at all: undecided (NULL) until the call has
  waited :data:`SETTLE_S` in the pass, then the offer's codec's rate, or
  ``0`` (8,000 Hz assumed): what the call page reads then too.

Why here and not in the receiving process: the receive loop only frames
packets (a SIP body is never looked at in Python there; the compiled parser
stores SIP rows without a Python object each), and the writers see RTCP rows
only. A store lookup per call (not per message), once per writer, costs one
indexed query; RTCP reports are a few a second per call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from asterfleet.capture.rtcp import rescaled
from asterfleet.capture.sdp import Negotiation, negotiation
from asterfleet.capture.store import RTCP_COLUMNS, Row

if TYPE_CHECKING:
    from asterfleet.capture.store import Store

#: A call with no SDP answer captured is decided this long after the pass first
#: saw it undecided: an answer comes with the 200 OK, before the media.
SETTLE_S = 30.0
#: How often writer 0 looks at the undecided reports.
PASS_EVERY_S = 2.0
#: At most this many undecided reports per pass, newest first.
PASS_ROWS = 1000
#: Calls whose clock a writer keeps (a few tens of bytes each).
CACHE_CALLS = 20_000
#: Calls per store lookup.
LOOKUP_CALLS = 200

_CALL_ID = RTCP_COLUMNS.index("call_id")
_FRACTION = RTCP_COLUMNS.index("fraction_lost")
_JITTER = RTCP_COLUMNS.index("jitter_ms")
_RTT = RTCP_COLUMNS.index("rtt_ms")
_MOS = RTCP_COLUMNS.index("mos")
_CLOCK = RTCP_COLUMNS.index("clock_hz")


def decide(found: Negotiation, waited_s: float | None) -> int | None:
    """The ``clock_hz`` to store for a call's reports (see the module
    docstring): the rate, 0 (8,000 Hz assumed) or None (not yet).
    ``waited_s``: how long the call has been undecided (None: just met)."""
    if not found.answered and (waited_s is None or waited_s < SETTLE_S):
        return None
    return found.clock_hz or 0


def at_clock(block: Row, clock_hz: int) -> Row:
    """An RTCP block row (:data:`RTCP_COLUMNS`, figures at 8,000 Hz) with its
    jitter and MOS at ``clock_hz`` (0: 8,000 Hz assumed) and the clock set."""
    values = list(block)
    if clock_hz:
        values[_JITTER], values[_MOS] = rescaled(
            block[_FRACTION], block[_JITTER], block[_RTT], clock_hz
        )
    values[_CLOCK] = clock_hz
    return tuple(values)


class MediaClocks:
    """One writer's decided clocks (a bounded cache by Call-ID) and, in
    writer 0, the pass over undecided reports."""

    def __init__(self, size: int = CACHE_CALLS) -> None:
        self.size = size
        self._known: OrderedDict[str, int] = OrderedDict()
        #: Calls the pass found undecided, and when it first did (monotonic).
        self._waiting: dict[str, float] = {}
        self._next_pass = 0.0

    def known(self, call_id: str) -> int | None:
        clock = self._known.get(call_id)
        if clock is not None:
            self._known.move_to_end(call_id)
        return clock

    def _remember(self, call_id: str, clock: int) -> None:
        self._known[call_id] = clock
        self._known.move_to_end(call_id)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    def look_up(self, store: Store, call_ids: Sequence[str], now: float) -> dict[str, int | None]:
        """The decided clock of each call (None: not yet), from the cache,
        else from the call's SIP messages in the store."""
        out: dict[str, int | None] = {}
        missing = []
        for call_id in dict.fromkeys(call_ids):
            clock = self.known(call_id)
            if clock is None:
                missing.append(call_id)
            out[call_id] = clock
        for start in range(0, len(missing), LOOKUP_CALLS):
            chunk = missing[start : start + LOOKUP_CALLS]
            raws: dict[str, list[bytes]] = {call_id: [] for call_id in chunk}
            for m in store.messages_of_calls(chunk):
                raws[m.call_id].append(m.raw)
            for call_id, messages in raws.items():
                since = self._waiting.get(call_id)
                clock = decide(negotiation(messages), None if since is None else now - since)
                out[call_id] = clock
                if clock is not None:
                    self._remember(call_id, clock)
                    self._waiting.pop(call_id, None)
        return out

    def stamp(self, store: Store, rows: list[Row], rtcp_at: Sequence[int]) -> None:
        """Set the clock of the RTCP rows at ``rtcp_at`` in ``rows`` (in place)
        where it is decided; the others stay undecided (the pass sees them).
        A store that does not answer leaves them all undecided."""
        calls = [rows[i][1][0][_CALL_ID] for i in rtcp_at if rows[i][1]]
        if not calls:
            return
        try:
            clocks = self.look_up(store, calls, time.monotonic())
        except Exception:
            return  # the insert says what is wrong with the store; the pass catches up
        for i in rtcp_at:
            tag, blocks = rows[i]
            clock = clocks.get(blocks[0][_CALL_ID]) if blocks else None
            if clock is not None:
                rows[i] = (tag, tuple(at_clock(b, clock) for b in blocks))

    def due(self, now: float) -> bool:
        if now < self._next_pass:
            return False
        self._next_pass = now + PASS_EVERY_S
        return True

    def settle(self, store: Store, now: float | None = None) -> int:
        """One pass over the newest undecided reports (at most
        :data:`PASS_ROWS`): each whose call's clock is decided now is
        rewritten at it. How many were."""
        import sqlalchemy as sa

        from asterfleet.capture.tables import rtcp_reports

        now = time.monotonic() if now is None else now
        t = rtcp_reports.c
        query = (
            sa.select(t.id, t.call_id, t.fraction_lost, t.jitter_ms, t.rtt_ms, t.mos)
            .where(t.clock_hz.is_(None))
            .order_by(t.ts_us.desc())
            .limit(PASS_ROWS)
        )
        with store.engine.connect() as conn:
            pending = conn.execute(query).all()
        if not pending:
            self._waiting.clear()
            return 0
        clocks = self.look_up(store, [r.call_id for r in pending], now)
        for call_id, clock in clocks.items():
            if clock is None:
                self._waiting.setdefault(call_id, now)
        if len(self._waiting) > self.size:  # calls whose reports aged out undecided
            self._waiting = dict(list(self._waiting.items())[-self.size :])
        updates: list[dict[str, Any]] = []
        for r in pending:
            clock = clocks.get(r.call_id)
            if clock is None:
                continue
            jitter, mos = (
                rescaled(r.fraction_lost, r.jitter_ms, r.rtt_ms, clock)
                if clock
                else (r.jitter_ms, r.mos)
            )
            updates.append({"i": r.id, "j": jitter, "m": mos, "c": clock})
        if updates:
            update = (
                sa.update(rtcp_reports)
                .where(t.id == sa.bindparam("i"), t.clock_hz.is_(None))
                .values(
                    jitter_ms=sa.bindparam("j"),
                    mos=sa.bindparam("m"),
                    clock_hz=sa.bindparam("c"),
                )
            )
            with store.engine.begin() as conn:
                conn.execute(update, updates)
        return len(updates)
