"""Running an agent in the foreground: signals, logs, metrics, exit codes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from asterfleet import logs


def run_daemon(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]], name: str) -> int:
    """Run ``main(shutdown)``; SIGTERM/SIGINT set ``shutdown``, a second one forces exit."""

    async def runner() -> int:
        shutdown = asyncio.Event()
        loop = asyncio.get_running_loop()
        task: asyncio.Task[int] = asyncio.create_task(main(shutdown))
        log = logs.get(name)

        def on_signal(signame: str) -> None:
            if shutdown.is_set():
                log.warning("forced_exit", signal=signame)
                task.cancel()
                return
            log.info("shutdown_requested", signal=signame)
            shutdown.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            return await task
        except asyncio.CancelledError:
            return 1

    return asyncio.run(runner())
