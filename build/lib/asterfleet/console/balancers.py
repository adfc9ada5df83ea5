"""The Balancers page: what each Kamailio balancer applied, and whether they agree."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from asterfleet.console.live import live_response
from asterfleet.console.security import Principal, page_user
from asterfleet.console.state import console_state
from asterfleet.console.web import render
from asterfleet.errors import EtcdUnavailable
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.view import FleetView

router = APIRouter(include_in_schema=False)


def balancer_context(view: FleetView | None, error: str | None) -> dict[str, Any]:
    balancers = view.balancers if view else []
    hashes = {b.list_hash for b in balancers}
    return {
        "balancers": balancers,
        "agree": view.balancers_agree() if view else True,
        "distinct_hashes": len(hashes),
        "fleet_revision": view.revision if view else None,
        "etcd_error": error,
        "now": time.time(),
    }


@router.get("/balancers")
async def balancers_page(request: Request, user: Principal = Depends(page_user)) -> Response:
    st = console_state(request)
    error: str | None = None
    try:
        view: FleetView | None = await read_fleet(st.require_etcd(), st.ks)
    except EtcdUnavailable as exc:
        view, error = (st.monitor.view if st.monitor else None), str(exc)
    return render(
        request, "balancers.html", user, area="balancers", **balancer_context(view, error)
    )


@router.get("/balancers/stream")
async def balancers_stream(request: Request, user: Principal = Depends(page_user)) -> Response:
    st = console_state(request)

    def fragment() -> str:
        monitor = st.monitor
        view = monitor.view if monitor else None
        error = monitor.error if monitor and not monitor.connected else None
        return st.templates.get_template("_balancers_live.html").render(
            balancer_context(view, error)
        )

    return live_response(request, "balancers", fragment)
