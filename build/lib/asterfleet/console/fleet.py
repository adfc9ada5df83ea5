"""The Fleet page: every node, live, with drain / undrain / weight."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from asterfleet.console import operate
from asterfleet.console.live import live_response
from asterfleet.console.security import Principal, page_user
from asterfleet.console.state import ConsoleState, console_state
from asterfleet.console.web import render
from asterfleet.errors import AsterfleetError, EtcdUnavailable, RecordError, UsageError
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.view import FleetView

router = APIRouter(include_in_schema=False)


def _summary(view: FleetView | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in view.nodes if view else []:
        counts[n.state.value] = counts.get(n.state.value, 0) + 1
    return counts


def _live_context(st: ConsoleState, view: FleetView | None, error: str | None) -> dict[str, Any]:
    now = time.time()
    return {
        "view": view,
        "nodes": [n.as_dict(now) for n in view.nodes] if view else [],
        "counts": _summary(view),
        "etcd_error": error,
        "now": now,
    }


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/fleet", status_code=303)


@router.get("/fleet")
async def fleet_page(
    request: Request, msg: str = "", err: str = "", user: Principal = Depends(page_user)
) -> Response:
    st = console_state(request)
    view: FleetView | None
    error: str | None = None
    try:
        view = await read_fleet(st.require_etcd(), st.ks)
    except EtcdUnavailable as exc:
        view = st.monitor.view if st.monitor else None
        error = str(exc)
    return render(
        request,
        "fleet.html",
        user,
        area="fleet",
        msg=msg,
        err=err,
        **_live_context(st, view, error),
    )


@router.get("/fleet/stream")
async def fleet_stream(request: Request, user: Principal = Depends(page_user)) -> Response:
    st = console_state(request)
    templates = st.templates

    def fragment() -> str:
        monitor = st.monitor
        view = monitor.view if monitor else None
        error = monitor.error if monitor and not monitor.connected else None
        ctx = _live_context(st, view, error)
        ctx.update(user=user, csrf_token=user.csrf_token)
        return templates.get_template("_fleet_live.html").render(ctx)

    return live_response(request, "fleet", fragment)


async def _act(
    request: Request, user: Principal, action: str, node_id: str, weight: str | None, note: str
) -> Response:
    st = console_state(request)
    wants_json = request.headers.get("x-requested-with") == "fetch"
    try:
        w = operate.parse_weight(weight) if action == "weight" else None
        await operate.perform(st, user, action, node_id, w, note)
    except (UsageError, RecordError) as exc:
        if wants_json:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        return RedirectResponse(f"/fleet?err={quote(str(exc))}", status_code=303)
    except AsterfleetError as exc:
        if wants_json:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=503)
        return RedirectResponse(f"/fleet?err={quote(str(exc))}", status_code=303)
    done = f"{action} {node_id}: done"
    if wants_json:
        return JSONResponse({"ok": True, "message": done})
    return RedirectResponse(f"/fleet?msg={quote(done)}", status_code=303)


@router.post("/fleet/nodes/{node_id}/drain")
async def drain(
    request: Request, node_id: str, note: str = Form(""), user: Principal = Depends(page_user)
) -> Response:
    return await _act(request, user, "drain", node_id, None, note)


@router.post("/fleet/nodes/{node_id}/undrain")
async def undrain(
    request: Request, node_id: str, note: str = Form(""), user: Principal = Depends(page_user)
) -> Response:
    return await _act(request, user, "undrain", node_id, None, note)


@router.post("/fleet/nodes/{node_id}/weight")
async def weight(
    request: Request,
    node_id: str,
    weight: str = Form(""),
    note: str = Form(""),
    user: Principal = Depends(page_user),
) -> Response:
    return await _act(request, user, "weight", node_id, weight, note)
