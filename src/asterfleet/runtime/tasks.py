"""An agent's background tasks: kept running, and stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

#: How long a loop that failed waits before it runs again.
RESTART_AFTER_S = 2.0


async def supervise(
    name: str,
    loop: Callable[[], Awaitable[None]],
    stopping: asyncio.Event,
    log: FilteringBoundLogger,
    restart_after: float = RESTART_AFTER_S,
) -> None:
    """Run ``loop``, and again after an exception ends it, until ``stopping``.

    Each loop handles the failures it expects. One it does not (a bug, an
    error class a library added) used to end its task silently while the
    agent looked alive: a node agent whose registration loop died that way
    never registered. Here it is logged (``loop_failed``) and the loop is
    started again. A loop that returns is done (one with nothing to do, such
    as the VIP check of a balancer without a VIP, returns at once).
    """
    while not stopping.is_set():
        try:
            await loop()
            return
        except Exception as exc:
            log.error("loop_failed", loop=name, error=repr(exc), restart_in_s=restart_after)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), restart_after)


async def cancel_all(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel every task and wait for each to finish, whatever it raises."""
    pending = list(tasks)
    for t in pending:
        t.cancel()
    for t in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
