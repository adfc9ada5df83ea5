"""Server-sent events: push a freshly rendered fragment after each fleet change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from asterfleet.auth import lookup_session
from asterfleet.console.security import SESSION_COOKIE
from asterfleet.console.state import console_state

KEEPALIVE = 15.0


def sse_message(event: str, data: str) -> str:
    """One SSE message; every line of ``data`` gets its own ``data:`` field."""
    lines = data.splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def live_response(request: Request, event: str, render: Callable[[], str]) -> StreamingResponse:
    """Stream ``render()`` now and after every change, until the browser goes away
    or its session ends."""
    st = console_state(request)
    monitor = st.monitor
    cookie = request.cookies.get(SESSION_COOKIE, "")

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        yield sse_message(event, render())
        if monitor is None:
            return
        with monitor.subscribe() as changes:
            while True:
                try:
                    await asyncio.wait_for(changes.get(), KEEPALIVE)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    if await asyncio.to_thread(lookup_session, st.db, cookie) is None:
                        yield sse_message("logout", "")
                        return
                    yield ": keepalive\n\n"
                    continue
                yield sse_message(event, render())

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
