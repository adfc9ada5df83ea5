"""The Events page: what happened to the fleet and who did it, with filters."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from asterfleet.console import eventlog
from asterfleet.console.security import Principal, page_user
from asterfleet.console.state import console_state
from asterfleet.console.transitions import KINDS
from asterfleet.console.web import render
from asterfleet.errors import UsageError

router = APIRouter(include_in_schema=False)


@router.get("/events")
async def events_page(
    request: Request,
    kind: str = "",
    node: str = "",
    actor: str = "",
    since: str = "",
    limit: int = 200,
    user: Principal = Depends(page_user),
) -> Response:
    st = console_state(request)
    filt = eventlog.EventFilter(kind=kind, node=node.strip(), actor=actor.strip(), since=since)
    error = ""
    rows: list[eventlog.EventRow] = []
    try:
        filt = eventlog.EventFilter(
            kind=filt.kind, node=filt.node, actor=filt.actor, since=filt.since, limit=limit
        ).checked()
        rows = await asyncio.to_thread(eventlog.query, st.db, st.ks.cluster, filt)
    except UsageError as exc:
        error = str(exc)
    return render(
        request,
        "events.html",
        user,
        area="events",
        rows=rows,
        filt=filt,
        kinds=KINDS,
        since_choices=eventlog.SINCE_CHOICES,
        err=error,
    )
