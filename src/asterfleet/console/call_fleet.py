"""A call seen with the fleet: its hosts named (caller, lb1, ast2), the node
that took it with its state and intent at the call's start, and the fleet
events during the call, on the ladder's time axis.

Reads the console's database (address history, events) and the monitor's
current view (for addresses the history has not seen yet); the rules are
pure, in asterfleet.fleet.directory, asterfleet.capture.naming and
:func:`asterfleet.console.eventlog.state_at`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from asterfleet.capture.ladder import Note
from asterfleet.capture.naming import fleet_names
from asterfleet.capture.search import CallSummary
from asterfleet.capture.store import Message
from asterfleet.console import eventlog
from asterfleet.console.addressbook import directory
from asterfleet.db import Database
from asterfleet.fleet.directory import NODE, Directory, Sighting, capture_key, holders
from asterfleet.fleet.view import FleetView

#: Events this long before the call's first message still show (a drain just
#: before the INVITE explains where it went).
LEAD_S = 5.0


@dataclass(frozen=True)
class CallFleet:
    names: dict[str, str]  # address -> name
    node: str = ""  # the node that took the call (its id), "" when not known
    state: eventlog.StateAt | None = None  # the node's state at the call's start
    events: list[eventlog.EventRow] = field(default_factory=list)  # during the call
    notes: list[Note] = field(default_factory=list)  # those concerning the call's hosts
    mine: frozenset[int] = frozenset()  # ids of the events that concern the call's hosts

    def as_dict(self) -> dict[str, object]:
        return {
            "names": self.names,
            "node_name": self.node or None,
            "node_state": None
            if self.state is None
            else {
                "state": self.state.state,
                "since": self.state.since,
                "by": self.state.actor,
                "event": self.state.kind,
            },
            "events": [e.as_dict() for e in self.events],
        }


def _addresses(msgs: Sequence[Message]) -> set[str]:
    out: set[str] = set()
    for m in msgs:
        for a in (m.src, m.dst):
            out.add(a)
            host, sep, port = a.rpartition(":")
            if sep and port.isdigit():
                out.add(host.strip("[]"))
        out.add(capture_key(m.capture_id))
    return out


def _concerns(e: eventlog.EventRow, names: set[str]) -> bool:
    if e.node_id:
        return e.node_id in names
    return any(n in e.message.replace(",", " ").replace(":", " ").split() for n in names)


def call_fleet(
    db: Database,
    cluster: str,
    view: FleetView | None,
    msgs: Sequence[Message],
    summary: CallSummary,
    now: float | None = None,
) -> CallFleet:
    """The fleet around one call (blocking: run it in a thread)."""
    wanted = _addresses(msgs)
    book = directory(db, cluster, wanted)
    if view is not None:  # addresses the history has not recorded yet
        known = {a for a in wanted if book.holder(a, 0.0) is not None}
        at_now = time.time() if now is None else now
        fresh = [Sighting(h, at_now) for h in holders(view) if h.address in wanted - known]
        if fresh:
            book = Directory([*book.sightings(), *fresh])
    start = summary.start_us / 1_000_000
    end = summary.end_us / 1_000_000
    if summary.in_progress:
        end = max(end, time.time() if now is None else now)
    names = fleet_names(
        msgs,
        lambda a: book.name(a, start),
        lambda cid: book.name(capture_key(cid), start),
    )
    node = ""
    if summary.node:
        holder = book.holder(summary.node, start)
        if holder is not None and holder.kind == NODE:
            node = holder.name
        else:
            node = names.get(summary.node, "")
    state = None
    if node:
        state = eventlog.state_at(eventlog.node_history(db, cluster, node, start), start)
    events = eventlog.between(db, cluster, start - LEAD_S, end)
    named = set(names.values())
    mine = [e for e in events if _concerns(e, named)]
    notes = [
        Note(int(e.at * 1_000_000), e.message + (f" (by {e.actor})" if e.actor else ""), e.kind)
        for e in mine
    ]
    return CallFleet(names, node, state, events, notes, frozenset(e.id for e in mine))


def node_names(db: Database, cluster: str, calls: Sequence[CallSummary]) -> dict[str, str]:
    """Call-ID -> the id of the node that took it (at its start), for a list."""
    book = directory(db, cluster, {c.node for c in calls if c.node})
    out: dict[str, str] = {}
    for c in calls:
        held = book.holder(c.node, c.start_us / 1_000_000) if c.node else None
        if held is not None and held.kind == NODE:
            out[c.call_id] = held.name
    return out
