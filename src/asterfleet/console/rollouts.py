"""The Rollouts page: every rollout of the cluster, live, with pause, resume
and abort (the same operations as `asterfleet rollout`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from asterfleet.console.live import KEEPALIVE, sse_message
from asterfleet.console.security import Principal, page_user, require_write
from asterfleet.console.state import ConsoleState, console_state
from asterfleet.console.web import render
from asterfleet.errors import AsterfleetError, EtcdUnavailable, UsageError
from asterfleet.rollout.model import FINISHED, Rollout
from asterfleet.rollout.operations import VERBS, change_rollout, list_rollouts

router = APIRouter(include_in_schema=False)
REFRESH = 1.0  # seconds between two reads while a rollout is unfinished


async def _context(st: ConsoleState) -> dict[str, Any]:
    rollouts: list[Rollout] = []
    problems: list[str] = []
    error: str | None = None
    try:
        rollouts, problems = await list_rollouts(st.require_etcd(), st.ks)
    except EtcdUnavailable as exc:
        error = str(exc)
    rollouts.reverse()  # newest first
    return {
        "rollouts": rollouts,
        "current": [r for r in rollouts if r.state not in FINISHED],
        "problems": problems,
        "etcd_error": error,
        "now": time.time(),
    }


@router.get("/rollouts")
async def rollouts_page(
    request: Request, msg: str = "", err: str = "", user: Principal = Depends(page_user)
) -> Response:
    st = console_state(request)
    ctx = await _context(st)
    return render(request, "rollouts.html", user, area="rollouts", msg=msg, err=err, **ctx)


@router.get("/rollouts/stream")
async def rollouts_stream(request: Request, user: Principal = Depends(page_user)) -> Response:
    st = console_state(request)
    template = st.templates.get_template("_rollouts_live.html")

    async def fragment() -> str:
        ctx = await _context(st)
        ctx.update(user=user, csrf_token=user.csrf_token)
        return template.render(ctx)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        last = ""
        quiet = 0.0
        with contextlib.ExitStack() as stack:
            changes = stack.enter_context(st.monitor.subscribe()) if st.monitor else None
            while True:
                html = await fragment()
                if html != last:
                    last = html
                    quiet = 0.0
                    yield sse_message("rollouts", html)
                if await request.is_disconnected():
                    return
                # Rollout records are not in the fleet monitor's view: re-read
                # after every fleet change, and every second in any case.
                with contextlib.suppress(TimeoutError):
                    if changes is not None:
                        await asyncio.wait_for(changes.get(), REFRESH)
                    else:
                        await asyncio.sleep(REFRESH)
                quiet += REFRESH
                if quiet >= KEEPALIVE:
                    quiet = 0.0
                    yield ": keepalive\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post("/rollouts/{rollout_id}/{verb}")
async def act(
    request: Request, rollout_id: str, verb: str, user: Principal = Depends(page_user)
) -> Response:
    st = console_state(request)
    wants_json = request.headers.get("x-requested-with") == "fetch"
    try:
        require_write(user)
        if verb not in VERBS:
            raise UsageError(f"unknown rollout action {verb!r}: use {', '.join(VERBS)}")
        r = await change_rollout(st.require_etcd(), st.ks, rollout_id, verb, user.actor)
    except AsterfleetError as exc:
        if wants_json:
            code = 400 if isinstance(exc, UsageError) else 503
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=code)
        return RedirectResponse(f"/rollouts?err={quote(str(exc))}", status_code=303)
    done = f"rollout {r.id}: {r.state.value}"
    if wants_json:
        return JSONResponse({"ok": True, "message": done})
    return RedirectResponse(f"/rollouts?msg={quote(done)}", status_code=303)
