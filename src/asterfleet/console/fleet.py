"""The Fleet page: the fleet a page at a time (filter, sort, page), live
row by row, with drain / undrain / weight."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from asterfleet.console import operate
from asterfleet.console.fleet_table import PAGE_SIZES, FleetQuery, row_version, select
from asterfleet.console.live import live_response
from asterfleet.console.security import Principal, page_user
from asterfleet.console.state import ConsoleState, console_state
from asterfleet.console.web import render
from asterfleet.errors import AsterfleetError, EtcdUnavailable, RecordError, UsageError
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.model import EffectiveState
from asterfleet.fleet.view import FleetView

router = APIRouter(include_in_schema=False)


def _rows(view: FleetView | None, now: float) -> list[dict[str, Any]]:
    return [n.as_dict(now) for n in view.nodes] if view else []


async def _current_view(st: ConsoleState) -> tuple[FleetView | None, str | None]:
    """The watch's view when it is live (no etcd read per page), else a read."""
    monitor = st.monitor
    if monitor is not None and monitor.connected and monitor.view is not None:
        return monitor.view, None
    try:
        return await read_fleet(st.require_etcd(), st.ks), None
    except EtcdUnavailable as exc:
        return (monitor.view if monitor else None), str(exc)


def _query(request: Request) -> FleetQuery:
    return FleetQuery.from_params(dict(request.query_params))


def _page_context(
    view: FleetView | None, q: FleetQuery, error: str | None, now: float
) -> dict[str, Any]:
    page = select(_rows(view, now), q)
    for row in page.rows:
        row["v"] = row_version(row)
    return {
        "view": view,
        "page": page,
        "q": page.query,
        "states": [s.value for s in EffectiveState],
        "page_sizes": PAGE_SIZES,
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
    try:
        q = _query(request)
    except UsageError as exc:
        q, err = FleetQuery(), str(exc)
    view, error = await _current_view(st)
    return render(
        request, "fleet.html", user, area="fleet", msg=msg, err=err,
        **_page_context(view, q, error, time.time()),
    )  # fmt: skip


# At most this many updates a second per browser, whatever the churn.
MAX_UPDATES_PER_SECOND = 4


@router.get("/fleet/stream")
async def fleet_stream(request: Request, user: Principal = Depends(page_user)) -> Response:
    """The rows of the browser's page that changed (keyed by node id), the
    page's order when it changed, and the summary when it changed."""
    st = console_state(request)
    try:
        q = _query(request)
    except UsageError:
        q = FleetQuery()
    row_template = st.templates.get_template("_fleet_row.html")
    summary_template = st.templates.get_template("_fleet_summary.html")
    sent: dict[str, str] = {}
    last: dict[str, Any] = {"order": None, "summary": None}

    def update() -> str | None:
        monitor = st.monitor
        view = monitor.view if monitor else None
        error = monitor.error if monitor and not monitor.connected else None
        ctx = _page_context(view, q, error, time.time())
        ctx.update(user=user, csrf_token=user.csrf_token)
        page = ctx["page"]
        changed = []
        for row in page.rows:
            if sent.get(row["id"]) != row["v"]:
                changed.append([row["id"], row["v"], row_template.render(ctx, n=row)])
                sent[row["id"]] = row["v"]
        order = [r["id"] for r in page.rows]
        summary = summary_template.render(ctx)
        msg: dict[str, Any] = {"rows": changed}
        if order != last["order"]:
            msg["order"] = last["order"] = order
            for gone in set(sent) - set(order):
                del sent[gone]
        if summary != last["summary"]:
            msg["summary"] = last["summary"] = summary
        if not changed and "order" not in msg and "summary" not in msg:
            return None
        return json.dumps(msg)

    return live_response(request, "rows", update, min_interval=1 / MAX_UPDATES_PER_SECOND)


def _back(back: str) -> str:
    """Where a form's action returns: the Fleet page, or the node page it came from."""
    return back if back.startswith("/fleet/nodes/") and "//" not in back else "/fleet"


async def _act(
    request: Request,
    user: Principal,
    action: str,
    node_id: str,
    weight: str | None,
    note: str,
    back: str = "",
) -> Response:
    st = console_state(request)
    wants_json = request.headers.get("x-requested-with") == "fetch"
    page = _back(back)
    try:
        w = operate.parse_weight(weight) if action == "weight" else None
        await operate.perform(st, user, action, node_id, w, note)
    except (UsageError, RecordError) as exc:
        if wants_json:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        return RedirectResponse(f"{page}?err={quote(str(exc))}", status_code=303)
    except AsterfleetError as exc:
        if wants_json:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=503)
        return RedirectResponse(f"{page}?err={quote(str(exc))}", status_code=303)
    done = f"{action} {node_id}: done"
    if wants_json:
        return JSONResponse({"ok": True, "message": done})
    return RedirectResponse(f"{page}?msg={quote(done)}", status_code=303)


@router.post("/fleet/nodes/{node_id}/drain")
async def drain(
    request: Request,
    node_id: str,
    note: str = Form(""),
    back: str = Form(""),
    user: Principal = Depends(page_user),
) -> Response:
    return await _act(request, user, "drain", node_id, None, note, back)


@router.post("/fleet/nodes/{node_id}/undrain")
async def undrain(
    request: Request,
    node_id: str,
    note: str = Form(""),
    back: str = Form(""),
    user: Principal = Depends(page_user),
) -> Response:
    return await _act(request, user, "undrain", node_id, None, note, back)


@router.post("/fleet/nodes/{node_id}/weight")
async def weight(
    request: Request,
    node_id: str,
    weight: str = Form(""),
    note: str = Form(""),
    back: str = Form(""),
    user: Principal = Depends(page_user),
) -> Response:
    return await _act(request, user, "weight", node_id, weight, note, back)
