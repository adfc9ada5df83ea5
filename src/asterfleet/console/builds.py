"""The Builds area: knots, their builds, "build now", cancel, retry, and a
build's log followed live over server-sent events.

The log stream is resumable: every event's id is the log offset after it,
so a reconnecting browser (``Last-Event-ID``) gets exactly what it missed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from sqlalchemy import Engine

from asterfleet.console.factory_state import FactoryState, factory_state
from asterfleet.console.knot_access import may_add, may_edit, may_see
from asterfleet.console.security import Principal, page_user
from asterfleet.console.web import render
from asterfleet.errors import UsageError
from asterfleet.factory import queue
from asterfleet.factory.knot import Knot
from asterfleet.factory.logs import read_log, stream_log
from asterfleet.factory.queue import Build
from asterfleet.factory.store import get_knot, list_knots

router = APIRouter(include_in_schema=False)
T = TypeVar("T")

log = structlog.get_logger("asterfleet.console.builds")

BUILD_STATE_CLASSES = {
    "queued": "muted",
    "running": "info",
    "testing": "info",
    "pushing": "info",
    "passed": "ok",
    "failed": "bad",
    "cancelled": "warn",
}


def may_operate(user: Principal, knot: Knot) -> bool:
    """Build now, cancel and retry: console admins, the knot's owners, and any
    operator when the knot names no owner."""
    if user.role == "admin" or user.username in knot.owners:
        return True
    return not knot.owners and user.can_act


def duration(build: Build, now: dt.datetime | None = None) -> float | None:
    """Seconds the build ran (so far, while it runs)."""
    if build.started_at is None:
        return None
    end = build.finished_at or (now or dt.datetime.now(dt.UTC))
    return max(0.0, (end - build.started_at).total_seconds())


def resume_offset(last_event_id: str | None, offset: str | None) -> int:
    """Where a log stream starts: the browser's Last-Event-ID (a reconnect)
    wins over the page's ``offset``; both are log offsets."""
    for name, value in (("Last-Event-ID", last_event_id), ("offset", offset)):
        if value is None or value == "":
            continue
        if not value.isdigit() or len(value) > 15:
            raise UsageError(f"{name} {value!r}: expected a log offset (a whole number)")
        return int(value)
    return 0


def log_event(offset: int, text: str) -> str:
    """One SSE event carrying a log chunk (JSON-encoded: logs hold CRs)."""
    return f"id: {offset}\nevent: log\ndata: {json.dumps(text)}\n\n"


def _row(build: Build, now: dt.datetime) -> dict[str, Any]:
    return {
        **build.as_dict(),
        "short_sha": (build.sha or "")[:12],
        "duration": duration(build, now),
        "state_class": BUILD_STATE_CLASSES.get(build.state, "muted"),
        "finished": build.state in queue.FINISHED,
    }


def _knot(fs: FactoryState, name: str, user: Principal) -> Knot:
    """The knot, or 404 — also when ``user`` may not see it (no hint it exists)."""
    try:
        knot = get_knot(fs.engine, name)
    except UsageError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    if not may_see(fs, user, knot):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no knot {name!r}")
    return knot


def _build(fs: FactoryState, name: str, number: int) -> Build:
    try:
        return queue.get_build(fs.engine, name, number)
    except UsageError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def _require_operate(user: Principal, knot: Knot) -> None:
    if not may_operate(user, knot):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{user.username} may not build knot {knot.name}: ask one of its owners "
            f"({', '.join(knot.owners) or 'operators'}) or an admin",
        )


@router.get("/knots")
async def knots_page(
    request: Request,
    msg: str = "",
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    def load() -> list[dict[str, Any]]:
        now = dt.datetime.now(dt.UTC)
        out = []
        for knot in list_knots(fs.engine):
            if not may_see(fs, user, knot):
                continue
            latest = queue.list_builds(fs.engine, knot.name, limit=1)
            out.append({"knot": knot, "latest": _row(latest[0], now) if latest else None})
        return out

    rows = await asyncio.to_thread(load)
    return render(
        request, "knots.html", user, area="knots", rows=rows, msg=msg, may_add=may_add(user)
    )


@router.get("/knots/{name}")
async def knot_page(
    request: Request,
    name: str,
    msg: str = "",
    err: str = "",
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    knot = await asyncio.to_thread(_knot, fs, name, user)
    builds = await asyncio.to_thread(queue.list_builds, fs.engine, name, 100)
    now = dt.datetime.now(dt.UTC)
    default_ref = (
        f"refs/heads/{knot.branch}" if knot.branch else f"refs/tags/{knot.tag_pattern or ''}"
    )
    return render(
        request,
        "knot.html",
        user,
        area="knots",
        knot=knot,
        builds=[_row(b, now) for b in builds],
        may_operate=may_operate(user, knot),
        may_edit=may_edit(user, knot),
        default_ref=default_ref,
        msg=msg,
        err=err,
    )


@router.post("/knots/{name}/build")
async def build_now(
    name: str,
    ref: str = Form(""),
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    knot = await asyncio.to_thread(_knot, fs, name, user)
    _require_operate(user, knot)
    ref = ref.strip() or (f"refs/heads/{knot.branch}" if knot.branch else "")
    if not ref.startswith(("refs/heads/", "refs/tags/")):
        return RedirectResponse(
            f"/knots/{name}?err=" + quote(f"ref {ref!r}: use refs/heads/BRANCH or refs/tags/TAG"),
            status_code=303,
        )
    done = await asyncio.to_thread(
        queue.enqueue, fs.engine, name, ref, None, f"console:{user.username}"
    )
    log.info("build_now", knot=name, ref=ref, build=done.build.number, user=user.username)
    what = "joined the queued" if done.joined else "queued"
    return RedirectResponse(
        f"/knots/{name}?msg=" + quote(f"{what} build #{done.build.number} of {ref}"),
        status_code=303,
    )


async def _on_build(
    fs: FactoryState,
    user: Principal,
    name: str,
    number: int,
    op: Callable[[Engine, str, int], T],
) -> T | Response:
    """Run a queue action on one build for a user allowed to operate the knot;
    a refusal comes back as a redirect to the build page saying why."""
    knot = await asyncio.to_thread(_knot, fs, name, user)
    _require_operate(user, knot)
    try:
        return await asyncio.to_thread(op, fs.engine, name, number)
    except UsageError as exc:
        return RedirectResponse(f"/knots/{name}/builds/{number}?err={quote(str(exc))}", 303)


@router.post("/knots/{name}/builds/{number}/cancel")
async def cancel_build(
    name: str,
    number: int,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    build = await _on_build(fs, user, name, number, queue.cancel)
    if isinstance(build, Response):
        return build
    log.info("build_cancel", knot=name, build=number, state=build.state, user=user.username)
    note = "cancelled" if build.state == "cancelled" else "cancel requested"
    return RedirectResponse(f"/knots/{name}/builds/{number}?msg={quote(note)}", 303)


@router.post("/knots/{name}/builds/{number}/retry")
async def retry_build(
    name: str,
    number: int,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    done = await _on_build(fs, user, name, number, queue.retry)
    if isinstance(done, Response):
        return done
    log.info("build_retry", knot=name, build=number, new=done.build.number, user=user.username)
    return RedirectResponse(
        f"/knots/{name}/builds/{done.build.number}?msg=" + quote(f"retry of #{number}"), 303
    )


@router.get("/knots/{name}/builds/{number}")
async def build_page(
    request: Request,
    name: str,
    number: int,
    msg: str = "",
    err: str = "",
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    knot = await asyncio.to_thread(_knot, fs, name, user)
    build = await asyncio.to_thread(_build, fs, name, number)
    text, offset = await asyncio.to_thread(read_log, fs.engine, build.id, 0)
    row = _row(build, dt.datetime.now(dt.UTC))
    return render(
        request,
        "build.html",
        user,
        area="knots",
        knot=knot,
        b=row,
        log_text=text,
        log_offset=offset,
        may_operate=may_operate(user, knot),
        msg=msg,
        err=err,
    )


@router.get("/knots/{name}/builds/{number}/log")
async def build_log_stream(
    request: Request,
    name: str,
    number: int,
    offset: str | None = None,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    await asyncio.to_thread(_knot, fs, name, user)
    build = await asyncio.to_thread(_build, fs, name, number)
    try:
        start = resume_offset(request.headers.get("last-event-id"), offset)
    except UsageError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None

    async def events() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        async for end, text in stream_log(fs.engine, build.id, start):
            yield log_event(end, text)
        final = await asyncio.to_thread(queue.build_by_id, fs.engine, build.id)
        yield f"event: end\ndata: {json.dumps({'state': final.state})}\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/knots/{name}/builds/{number}/log.txt")
async def build_log_text(
    name: str,
    number: int,
    user: Principal = Depends(page_user),
    fs: FactoryState = Depends(factory_state),
) -> Response:
    await asyncio.to_thread(_knot, fs, name, user)
    build = await asyncio.to_thread(_build, fs, name, number)
    text, _ = await asyncio.to_thread(read_log, fs.engine, build.id, 0)
    return Response(text, media_type="text/plain; charset=utf-8")
