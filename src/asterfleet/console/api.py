"""The JSON API under /api/v1: the same data and actions as the pages.

Authenticate with ``Authorization: Bearer <token>`` (``asterfleet users token
create``); scope ``read`` sees, ``write`` also acts. A browser session works
too, with its CSRF token in ``X-CSRF-Token`` for POSTs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from asterfleet.console import eventlog, operate
from asterfleet.console.security import Principal, api_user
from asterfleet.console.state import ConsoleState, console_state
from asterfleet.errors import AsterfleetError, EtcdUnavailable, RecordError, UsageError
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.model import AdminIntent, check_node_id
from asterfleet.fleet.view import FleetView

router = APIRouter(prefix="/api/v1", tags=["fleet"])


class IntentOut(BaseModel):
    drain: bool
    maintenance: bool
    weight: int | None
    note: str
    by: str
    at: float


class NodeOut(BaseModel):
    id: str
    set: int
    sip_uri: str
    state: str = Field(description="effective state: the stricter of agent and operator")
    agent_state: str
    operator: str = Field(description="operator intent in short, '-' for none")
    weight: int = Field(description="effective weight (operator override or the agent's)")
    priority: int
    max_calls: int
    active_calls: int | None
    version: str | None
    agent_version: str | None
    labels: dict[str, str]
    media_address: str | None
    probe: str | None
    started_at: float
    age_seconds: float | None
    intent: IntentOut | None


class BalancerOut(BaseModel):
    id: str
    revision: int
    list_hash: str
    nodes: int
    routable: int
    last_reload_ok: bool
    last_reload_at: float
    last_error: str | None
    algorithm: str
    agent_version: str | None
    updated_at: float


class BalancersOut(BaseModel):
    agree: bool = Field(description="true when every balancer applied the same list")
    balancers: list[BalancerOut]


class FleetOut(BaseModel):
    cluster: str
    revision: int
    nodes: list[NodeOut]
    balancers: BalancersOut
    problems: list[str] = Field(description="records in etcd that were skipped, and why")


class ActionIn(BaseModel):
    note: str | None = Field(default=None, max_length=200, description="why, for the record")


class WeightIn(ActionIn):
    # Strict: JSON false, true, "5" and 1e3 are not weights (lax parsing
    # turned false into weight 0, which stops new calls).
    weight: int | None = Field(
        ge=0,
        le=1000,
        strict=True,
        description="new weight (a JSON integer); null returns to the agent's own weight",
    )


class ActionOut(BaseModel):
    node: str
    action: str
    by: str
    intent: IntentOut


class EventOut(BaseModel):
    id: int
    at: float
    kind: str
    node: str
    actor: str
    message: str


class EventsOut(BaseModel):
    events: list[EventOut]


def _intent(i: AdminIntent) -> IntentOut:
    return IntentOut.model_validate(i.model_dump())


def _balancers(view: FleetView) -> BalancersOut:
    return BalancersOut(
        agree=view.balancers_agree(),
        balancers=[BalancerOut.model_validate(b.model_dump()) for b in view.balancers],
    )


async def _view(st: ConsoleState) -> FleetView:
    try:
        return await read_fleet(st.require_etcd(), st.ks)
    except EtcdUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


def _need(p: Principal, scope: str) -> None:
    if scope not in p.scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks scope {scope!r}")


@router.get("/fleet", response_model=FleetOut, summary="Every node and balancer")
async def get_fleet(request: Request, who: Principal = Depends(api_user)) -> Any:
    _need(who, "read")
    st = console_state(request)
    view = await _view(st)
    now = time.time()
    return FleetOut(
        cluster=st.ks.cluster,
        revision=view.revision,
        nodes=[NodeOut.model_validate(n.as_dict(now)) for n in view.nodes],
        balancers=_balancers(view),
        problems=view.problems,
    )


@router.get("/nodes/{node_id}", response_model=NodeOut, summary="One node")
async def get_node(request: Request, node_id: str, who: Principal = Depends(api_user)) -> Any:
    _need(who, "read")
    view = await _view(console_state(request))
    node = view.node(node_id)
    if node is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no node {node_id!r} in the fleet")
    return NodeOut.model_validate(node.as_dict())


async def _act(
    request: Request,
    who: Principal,
    action: str,
    node_id: str,
    weight: int | None,
    note: str | None,
) -> ActionOut:
    _need(who, "write")
    st = console_state(request)
    try:
        check_node_id(node_id)
        if action != "undrain" and await st.require_etcd().get(st.ks.node(node_id)) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no node {node_id!r} in the fleet")
        intent = await operate.perform(st, who, action, node_id, weight, note)
    except (UsageError, RecordError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except AsterfleetError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return ActionOut(node=node_id, action=action, by=who.actor, intent=_intent(intent))


@router.post("/nodes/{node_id}/drain", response_model=ActionOut, summary="Stop new calls")
async def drain(
    request: Request, node_id: str, body: ActionIn | None = None, who: Principal = Depends(api_user)
) -> Any:
    """No new calls to the node; calls in progress continue."""
    return await _act(request, who, "drain", node_id, None, body.note if body else None)


@router.post("/nodes/{node_id}/undrain", response_model=ActionOut, summary="Take calls again")
async def undrain(
    request: Request, node_id: str, body: ActionIn | None = None, who: Principal = Depends(api_user)
) -> Any:
    """Clear drain and maintenance: the node takes new calls once its agent is active."""
    return await _act(request, who, "undrain", node_id, None, body.note if body else None)


@router.post("/nodes/{node_id}/weight", response_model=ActionOut, summary="Override the weight")
async def weight(
    request: Request, node_id: str, body: WeightIn, who: Principal = Depends(api_user)
) -> Any:
    return await _act(request, who, "weight", node_id, body.weight, body.note)


@router.get("/balancers", response_model=BalancersOut, summary="Each balancer's applied state")
async def get_balancers(request: Request, who: Principal = Depends(api_user)) -> Any:
    _need(who, "read")
    return _balancers(await _view(console_state(request)))


@router.get("/events", response_model=EventsOut, summary="Fleet events, newest first")
async def get_events(
    request: Request,
    kind: str = Query("", description="joined, left, drained, unhealthy, action, ..."),
    node: str = Query("", description="node id (substring)"),
    actor: str = Query("", description="who acted (substring)"),
    since: str = Query("", description="15m, 1h, 6h, 24h, 7d, 30d; empty for all"),
    limit: int = Query(200, ge=1, le=eventlog.MAX_LIMIT),
    who: Principal = Depends(api_user),
) -> Any:
    _need(who, "read")
    st = console_state(request)
    filt = eventlog.EventFilter(kind=kind, node=node, actor=actor, since=since, limit=limit)
    try:
        rows = await asyncio.to_thread(eventlog.query, st.db, st.ks.cluster, filt)
    except UsageError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    return EventsOut(events=[EventOut.model_validate(r.as_dict()) for r in rows])
