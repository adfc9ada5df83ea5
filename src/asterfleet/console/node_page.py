"""One node's page: its record, its effective state and why, who changed its
intent and when, its recent calls (from capture, read-only), its events,
and the actions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from asterfleet.capture.pager import page_calls
from asterfleet.capture.search import CallSummary, MessageQuery, Party
from asterfleet.capture.store import Store
from asterfleet.console import addressbook, eventlog
from asterfleet.console.security import Principal, page_user
from asterfleet.console.state import console_state
from asterfleet.console.transitions import AGENT
from asterfleet.console.web import render
from asterfleet.errors import EtcdUnavailable, UsageError
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.directory import NODE
from asterfleet.fleet.model import EffectiveState
from asterfleet.fleet.view import FleetView, NodeView

log = structlog.get_logger("asterfleet.console.node")
router = APIRouter(include_in_schema=False)

RECENT_CALLS = 20
CALLS_WINDOW_S = 3600  # recent = the last hour of captured calls


@dataclass(frozen=True)
class Reason:
    source: str  # agent, operator, probe, calls
    says: str
    decides: bool  # whether this reason sets the effective state


def state_reasons(node: NodeView) -> list[Reason]:
    """Why the node is in its effective state, one line per source (pure)."""
    rec, intent, state = node.record, node.intent, node.state
    agent_decides = rec.state.value == state.value or (
        state is EffectiveState.DRAINED and rec.state.value == "draining"
    )
    out = [Reason("agent", f"reports {rec.state.value}", agent_decides)]
    if rec.probe:
        out.append(Reason("probe", f"last answer: {rec.probe}", rec.state.value == "unhealthy"))
    if intent is not None and not intent.is_default():
        wants = "maintenance" if intent.maintenance else ("drain" if intent.drain else "")
        detail = ", ".join(
            p for p in (wants, f"weight {intent.weight}" if intent.weight is not None else "") if p
        )
        by = f" (by {intent.by}" + (f": {intent.note}" if intent.note else "") + ")"
        out.append(Reason("operator", detail + by, bool(wants) and not agent_decides))
    else:
        out.append(Reason("operator", "no intent: the agent decides", False))
    calls = rec.active_calls
    if calls is None:
        out.append(Reason("calls", "not reported (its agent cannot count calls)", False))
    else:
        out.append(
            Reason("calls", f"{calls} in progress", state is EffectiveState.DRAINED and calls == 0)
        )
    return out


def _store(request: Request) -> Store | None:
    url = console_state(request).settings.capture_db
    if not url:
        return None
    store: Store | None = getattr(request.app.state, "capture_store", None)
    if store is None:
        store = Store(url)
        request.app.state.capture_store = store
    return store


def recent_calls(store: Store, node: Party, now: float) -> list[CallSummary]:
    """The node's calls of the last hour, newest first: the Calls page's
    search by node (every address it held, from the fleet's address history)."""
    q = MessageQuery(since_us=int((now - CALLS_WINDOW_S) * 1_000_000), node=node)
    return page_calls(store, q, limit=RECENT_CALLS).calls


@router.get("/fleet/nodes/{node_id}")
async def node_page(
    request: Request, node_id: str, user: Principal = Depends(page_user)
) -> Response:
    st = console_state(request)
    view: FleetView | None
    error = None
    try:
        view = await read_fleet(st.require_etcd(), st.ks)
    except EtcdUnavailable as exc:
        view, error = (st.monitor.view if st.monitor else None), str(exc)
    node = view.node(node_id) if view else None
    rows = await asyncio.to_thread(
        eventlog.query, st.db, st.ks.cluster, eventlog.EventFilter(node=node_id, limit=200)
    )
    mine = [r for r in rows if r.node_id in (node_id, "")]
    history = [r for r in mine if r.node_id == node_id and r.actor not in ("", AGENT)]
    calls: list[CallSummary] = []
    calls_note = ""
    store = _store(request)
    if store is None:
        calls_note = "capture is not configured (see the Calls page)"
    else:
        # A node that has left keeps its calls: its addresses are on record.
        try:
            party = await asyncio.to_thread(
                addressbook.party, st.db, st.ks.cluster, NODE, node_id, view
            )
            calls = await asyncio.to_thread(recent_calls, store, party, time.time())
        except UsageError:
            calls_note = "the node is not registered and the fleet has no address on record for it"
        except sa.exc.SQLAlchemyError as exc:
            log.warning("capture_db_error", error=str(exc).splitlines()[0])
            calls_note = "the capture database is unavailable: try again shortly"
    ctx: dict[str, Any] = {
        "node_id": node_id,
        "node": node.as_dict() if node else None,
        "orphan_intent": view.orphan_intents.get(node_id) if view and not node else None,
        "reasons": state_reasons(node) if node else [],
        "history": history[:50],
        "events": mine[:50],
        "calls": calls,
        "calls_note": calls_note,
        "etcd_error": error,
    }
    return render(
        request,
        "node.html",
        user,
        area="fleet",
        status_code=200 if node or ctx["orphan_intent"] or mine else 404,
        **ctx,
    )
