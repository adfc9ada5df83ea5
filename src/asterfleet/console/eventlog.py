"""The events table: record fleet transitions and operator actions, query them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select

from asterfleet.console.transitions import EventDraft, summarised_ids
from asterfleet.db import Database, Event
from asterfleet.errors import UsageError

MAX_LIMIT = 1000
_SINCE = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
SINCE_CHOICES = tuple(_SINCE)


@dataclass(frozen=True)
class EventRow:
    id: int
    at: float
    kind: str
    node_id: str
    actor: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at,
            "kind": self.kind,
            "node": self.node_id,
            "actor": self.actor,
            "message": self.message,
        }


@dataclass(frozen=True)
class EventFilter:
    kind: str = ""
    node: str = ""
    actor: str = ""
    since: str = ""  # one of SINCE_CHOICES, or "" for all
    limit: int = 200

    def checked(self) -> EventFilter:
        if self.since and self.since not in _SINCE:
            raise UsageError(
                f"since={self.since!r}: use one of {', '.join(SINCE_CHOICES)} (or leave it empty)"
            )
        if not 1 <= self.limit <= MAX_LIMIT:
            raise UsageError(f"limit={self.limit}: use 1 to {MAX_LIMIT}")
        return self


def record(
    db: Database, cluster: str, drafts: Sequence[EventDraft], at: float | None = None
) -> int:
    if not drafts:
        return 0
    now = time.time() if at is None else at
    with db.session() as s:
        for d in drafts:
            s.add(
                Event(
                    at=now,
                    cluster=cluster,
                    kind=d.kind,
                    node_id=d.node_id,
                    actor=d.actor[:64],
                    message=d.message,
                )
            )
    return len(drafts)


def query(db: Database, cluster: str, f: EventFilter, now: float | None = None) -> list[EventRow]:
    """Newest first, filtered; ``node`` and ``actor`` match a substring."""
    f = f.checked()
    q = select(Event).where(Event.cluster == cluster)
    if f.kind:
        q = q.where(Event.kind == f.kind)
    if f.node:  # its own events, and the summaries of bursts that list it
        q = q.where(
            or_(
                Event.node_id.contains(f.node, autoescape=True),
                and_(Event.node_id == "", Event.message.contains(f.node, autoescape=True)),
            )
        )
    if f.actor:
        q = q.where(Event.actor.contains(f.actor, autoescape=True))
    if f.since:
        q = q.where(Event.at >= (time.time() if now is None else now) - _SINCE[f.since])
    q = q.order_by(Event.at.desc(), Event.id.desc()).limit(f.limit)
    with db.session() as s:
        return [EventRow(e.id, e.at, e.kind, e.node_id, e.actor, e.message) for e in s.scalars(q)]


def members(db: Database, cluster: str) -> set[str]:
    """The nodes the events say are in the fleet (joined, and not left since):
    what a starting console compares its first view with."""
    q = (
        select(Event.kind, Event.node_id, Event.message)
        .where(Event.cluster == cluster, Event.kind.in_(("joined", "left")))
        .order_by(Event.at, Event.id)
    )
    present: set[str] = set()
    with db.session() as s:
        for kind, node_id, message in s.execute(q):
            ids = [node_id] if node_id else summarised_ids(message)
            if kind == "joined":
                present.update(ids)
            else:
                present.difference_update(ids)
    return present


def between(
    db: Database, cluster: str, since: float, until: float, limit: int = 100
) -> list[EventRow]:
    """Events from ``since`` to ``until`` (seconds), oldest first: what
    happened to the fleet during a call."""
    q = (
        select(Event)
        .where(Event.cluster == cluster, Event.at >= since, Event.at <= until)
        .order_by(Event.at, Event.id)
        .limit(limit)
    )
    with db.session() as s:
        return [EventRow(e.id, e.at, e.kind, e.node_id, e.actor, e.message) for e in s.scalars(q)]


def node_history(db: Database, cluster: str, node_id: str, until: float) -> list[EventRow]:
    """The node's own events up to ``until``, oldest first (its state then)."""
    q = (
        select(Event)
        .where(Event.cluster == cluster, Event.node_id == node_id, Event.at <= until)
        .order_by(Event.at.desc(), Event.id.desc())
        .limit(200)
    )
    with db.session() as s:
        rows = [EventRow(e.id, e.at, e.kind, e.node_id, e.actor, e.message) for e in s.scalars(q)]
    return rows[::-1]


@dataclass(frozen=True)
class StateAt:
    """A node's effective state at a moment, and the event that set it."""

    state: str
    since: float | None  # when it took that state (None: not recorded)
    actor: str  # who made the change ("agent" for its own record)
    kind: str  # the event's word (draining, undrained, ...)


# The effective state each kind of event leaves a node in.
_STATE_OF_KIND = {
    "draining": "draining",
    "drained": "drained",
    "maintenance": "maintenance",
    "unhealthy": "unhealthy",
    "starting": "starting",
    "active": "active",
    "recovered": "active",
    "undrained": "active",
    "left": "gone",
}


def state_at(events: Sequence[EventRow], at: float) -> StateAt | None:
    """The state the node's events (oldest first) leave it in at ``at`` (pure).

    A ``joined`` event names the state in its message's last parentheses."""
    found: StateAt | None = None
    for e in events:
        if e.at > at:
            break
        state = _STATE_OF_KIND.get(e.kind)
        if e.kind == "joined":
            _, _, tail = e.message.rpartition("(")
            state = tail.rstrip(")") or "active"
        if state is not None:
            found = StateAt(state, e.at, e.actor, e.kind)
    return found


#: Rows deleted per statement when trimming (bounded IN lists).
TRIM_CHUNK = 500


def trim(db: Database, cluster: str, before: float) -> int:
    """Delete the events older than ``before`` (seconds), but what the
    console still reads from them:

    - for each node in the fleet at ``before``, its last joined event, and
      for every other node a kept event names (a burst "3 nodes joined: …"),
      its last joined or left event: :func:`members` replays them to the
      same fleet;
    - for each node in the fleet at ``before`` (or never seen to join), its
      last event that set its state: :func:`state_at` at a kept call's start.

    The events of nodes that had left by then go. The number deleted."""
    q = (
        select(Event.id, Event.kind, Event.node_id, Event.message)
        .where(Event.cluster == cluster, Event.at < before)
        .order_by(Event.at, Event.id)
    )
    with db.session() as s:
        old: list[int] = []
        named: dict[int, list[str]] = {}  # membership event -> the nodes it names
        last: dict[str, tuple[int, str]] = {}  # node -> its last joined/left event
        last_state: dict[str, int] = {}  # node -> its last state-setting event
        for event_id, kind, node_id, message in s.execute(q):
            old.append(event_id)
            if kind in ("joined", "left"):
                named[event_id] = [node_id] if node_id else summarised_ids(message)
                for n in named[event_id]:
                    last[n] = (event_id, kind)
            if node_id and (kind in _STATE_OF_KIND or kind == "joined"):
                last_state[node_id] = event_id
        present = {n for n, (_, kind) in last.items() if kind == "joined"}
        keep = {last[n][0] for n in present}
        todo = list(keep)
        while todo:  # every node a kept event names ends as its last event says
            for n in named[todo.pop()]:
                if last[n][0] not in keep:
                    keep.add(last[n][0])
                    todo.append(last[n][0])
        keep |= {i for n, i in last_state.items() if n in present or n not in last}
        doomed = [i for i in old if i not in keep]
        for start in range(0, len(doomed), TRIM_CHUNK):
            s.execute(delete(Event).where(Event.id.in_(doomed[start : start + TRIM_CHUNK])))
    return len(doomed)
