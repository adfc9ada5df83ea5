"""Find captured messages and group them into calls.

Used by ``asterfleet capture search`` and by the console's Calls page.
:func:`summarise_call` is pure; the query functions take a :class:`Store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from asterfleet.capture.store import COLUMNS, Message, Store, messages, parse_duration
from asterfleet.errors import UsageError


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
    node: str | None = None
    limit: int = 100


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
    backend: str | None
    messages: int
    nodes: tuple[str, ...]

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
            "backend": self.backend,
            "messages": self.messages,
            "nodes": list(self.nodes),
        }


def parse_time(text: str, now_us: int) -> int:
    """An ISO 8601 time, or a duration ago (``15m``, ``2h``), in µs since the epoch."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            return now_us - int(parse_duration(value) * 1_000_000)
        except UsageError:
            raise UsageError(
                f"time {text!r}: give ISO 8601 (2024-05-01T12:00:00) or an age like 15m, 2h, 1d"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(q: MessageQuery) -> list[sa.ColumnElement[bool]]:
    c = messages.c
    conds: list[sa.ColumnElement[bool]] = []
    if q.call_id:
        conds.append(c.call_id == q.call_id)
    if q.from_user:
        conds.append(c.from_user.like(_escape_like(q.from_user) + "%", escape="\\"))
    if q.to_user:
        conds.append(c.to_user.like(_escape_like(q.to_user) + "%", escape="\\"))
    if q.since_us is not None:
        conds.append(c.ts_us >= q.since_us)
    if q.until_us is not None:
        conds.append(c.ts_us <= q.until_us)
    if q.method:
        conds.append(c.method == q.method.upper())
    if q.status is not None:
        conds.append(c.status == q.status)
    if q.node:
        cond = c.node == q.node
        if q.node.isdigit():
            cond = sa.or_(cond, c.capture_id == int(q.node))
        conds.append(cond)
    return conds


def search_messages(store: Store, q: MessageQuery) -> list[Message]:
    """Matching messages, newest first, at most ``q.limit``."""
    cols = [messages.c.id, *(messages.c[name] for name in COLUMNS)]
    query = (
        sa.select(*cols)
        .where(*_where(q))
        .order_by(messages.c.ts_us.desc(), messages.c.id.desc())
        .limit(q.limit)
    )
    return store.select(query)


def search_calls(store: Store, q: MessageQuery) -> list[CallSummary]:
    """Calls with at least one matching message, newest first, at most ``q.limit``."""
    c = messages.c
    last = sa.func.max(c.ts_us).label("last")
    ids_query = (
        sa.select(c.call_id, last).where(*_where(q)).group_by(c.call_id).order_by(last.desc())
    ).limit(q.limit)
    with store.engine.connect() as conn:
        call_ids = [row[0] for row in conn.execute(ids_query)]
    by_call: dict[str, list[Message]] = {cid: [] for cid in call_ids}
    for msg in store.messages_of_calls(call_ids):
        by_call[msg.call_id].append(msg)
    summaries = [summarise_call(msgs) for msgs in by_call.values() if msgs]
    summaries.sort(key=lambda s: s.start_us, reverse=True)
    return summaries


def call_messages(store: Store, call_id: str) -> list[Message]:
    """Every message of one call, in capture order."""
    return store.messages_of_calls([call_id])


def summarise_call(msgs: Sequence[Message]) -> CallSummary:
    """Start, duration, final status and backend of one call's messages.

    The final status is the last final answer to the INVITE (or to the
    first request, for calls without INVITE). The backend is the host that
    first sent that answer: the leaf behind the balancer, since the
    balancer's own copy of the answer is captured after it.
    """
    ordered = sorted(msgs, key=lambda m: (m.ts_us, m.id))
    first = ordered[0]
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
    backend = next((m.src for m in finals if m.status == final_status), None)
    origin = requests[0] if requests else first
    nodes = tuple(sorted({m.node or str(m.capture_id) for m in ordered}))
    return CallSummary(
        call_id=first.call_id,
        start_us=first.ts_us,
        end_us=ordered[-1].ts_us,
        method=method,
        from_user=origin.from_user,
        to_user=origin.to_user,
        final_status=final_status,
        backend=backend,
        messages=len(ordered),
        nodes=nodes,
    )
