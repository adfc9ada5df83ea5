"""An agent's loops under supervision: an exception restarts the loop, a
return ends it, and stopping ends the wait between runs."""

from __future__ import annotations

import asyncio

import pytest

from asterfleet.runtime.tasks import supervise


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def error(self, event: str, **kw: object) -> None:
        self.events.append((event, str(kw.get("loop"))))


@pytest.mark.parametrize(
    ("failures", "runs", "logged"),
    [
        (0, 1, []),  # returns at once: nothing to do, not restarted
        (1, 2, [("loop_failed", "probe")]),
        (3, 4, [("loop_failed", "probe")] * 3),
    ],
)
def test_a_loop_is_run_again_after_each_exception_and_not_after_a_return(
    failures: int, runs: int, logged: list[tuple[str, str]]
) -> None:
    async def go() -> tuple[int, list[tuple[str, str]]]:
        log = _Log()
        count = 0

        async def loop() -> None:
            nonlocal count
            count += 1
            if count <= failures:
                raise KeyError("a bug")

        await asyncio.wait_for(
            supervise("probe", loop, asyncio.Event(), log, restart_after=0.001),  # type: ignore[arg-type]
            5,
        )
        return count, log.events

    assert asyncio.run(go()) == (runs, logged)


def test_stopping_ends_the_wait_before_a_restart() -> None:
    async def go() -> int:
        stopping = asyncio.Event()
        count = 0

        async def loop() -> None:
            nonlocal count
            count += 1
            stopping.set()  # the agent stops while this run fails
            raise RuntimeError("a bug")

        await asyncio.wait_for(supervise("etcd", loop, stopping, _Log(), restart_after=60), 5)  # type: ignore[arg-type]
        return count

    assert asyncio.run(go()) == 1


def test_a_cancelled_agent_cancels_its_loop() -> None:
    async def go() -> bool:
        started = asyncio.Event()

        async def loop() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(supervise("status", loop, asyncio.Event(), _Log()))  # type: ignore[arg-type]
        await started.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(go())
