"""The console's live picture of the fleet: a watch on etcd, fanned out to browsers.

One task per console process reads the cluster's prefix, then follows it
with a watch; every batch of changes rebuilds the view, records what changed
into the events table and wakes every live page. When etcd goes away the
last view is kept (marked stale) and the task re-reads after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence

import structlog

from asterfleet.console.metrics import ConsoleMetrics
from asterfleet.console.transitions import EventDraft, diff_views, membership
from asterfleet.errors import EtcdUnavailable
from asterfleet.etcd_client import Etcd, WatchEvent, WatchLost
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import EffectiveState
from asterfleet.fleet.view import (
    FleetView,
    Parsed,
    build_view,
    parse_item,
    parse_snapshot,
    remove_item,
)

log = structlog.get_logger("asterfleet.console")

Recorder = Callable[[Sequence[EventDraft]], Awaitable[None]]
# The nodes the events table says are in the fleet (for the first view).
Members = Callable[[], Awaitable[set[str]]]
# Called with every fresh view (the address history keeps who held what).
Observer = Callable[[FleetView], Awaitable[object]]


class _Lost(Exception):
    pass


class FleetMonitor:
    def __init__(
        self,
        etcd: Etcd,
        ks: Keyspace,
        record: Recorder,
        metrics: ConsoleMetrics,
        max_backoff: float = 5.0,
        members: Members | None = None,
        observe: Observer | None = None,
    ) -> None:
        self.etcd = etcd
        self.observe = observe
        self.members = members
        self.ks = ks
        self.record = record
        self.metrics = metrics
        self.max_backoff = max_backoff
        self.view: FleetView | None = None
        self.connected = False
        self.error: str | None = None
        self.generation = 0  # bumped on every change a page could show
        self._subscribers: set[asyncio.Queue[int]] = set()
        self._ready = asyncio.Event()
        self._fresh = False

    # -- subscribers ------------------------------------------------------

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[int]]:
        """A queue that receives the generation number after each change (coalesced)."""
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        self._subscribers.add(q)
        self.metrics.live_clients.set(len(self._subscribers))
        try:
            yield q
        finally:
            self._subscribers.discard(q)
            self.metrics.live_clients.set(len(self._subscribers))

    def _notify(self) -> None:
        self.generation += 1
        for q in list(self._subscribers):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(self.generation)

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    # -- the loop -----------------------------------------------------------

    async def _publish(self, view: FleetView) -> None:
        old, self.view = self.view, view
        self.connected, self.error = True, None
        self._fresh = True
        self.metrics.etcd_connected.set(1)
        for state in EffectiveState:
            self.metrics.nodes.labels(state.value).set(
                sum(1 for n in view.nodes if n.state == state)
            )
        self._ready.set()
        self._notify()
        try:
            if old is not None:
                drafts = diff_views(old, view)
            elif self.members is not None:  # first view: against what the events know
                drafts = membership(await self.members(), view)
            else:
                drafts = []
            if drafts:
                await self.record(drafts)
        except Exception as exc:  # the store failing must not stop the watch
            log.error("events_not_recorded", error=str(exc))
        if self.observe is not None:
            try:
                await self.observe(view)
            except Exception as exc:
                log.error("addresses_not_recorded", error=str(exc))

    def _lost(self, why: str) -> None:
        if self.connected or self.error != why:
            log.warning("etcd_watch_lost", cluster=self.ks.cluster, error=why)
        self.connected, self.error = False, why
        self.metrics.etcd_connected.set(0)
        self._ready.set()
        self._notify()

    async def _follow(self) -> None:
        snap = await self.etcd.get_prefix(self.ks.prefix)
        parsed: Parsed = parse_snapshot(self.ks, snap.items)
        revision = snap.revision
        await self._publish(build_view(revision, parsed))
        log.info("fleet_watch_started", cluster=self.ks.cluster, revision=revision)
        async with self.etcd.watch_prefix(self.ks.prefix, revision + 1) as queue:
            while True:
                batch: list[WatchEvent | WatchLost] = [await queue.get()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                for ev in batch:
                    if isinstance(ev, WatchLost):
                        raise _Lost(str(ev))
                    if ev.kind == "put":
                        parse_item(self.ks, ev.key, ev.value, parsed)
                    else:
                        remove_item(self.ks, ev.key, parsed)
                    revision = max(revision, ev.mod_revision)
                await self._publish(build_view(revision, parsed))

    async def run(self) -> None:
        backoff = 0.25
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (EtcdUnavailable, _Lost) as exc:
                self._lost(str(exc))
            except Exception as exc:  # keep following whatever went wrong
                log.exception("fleet_watch_failed", cluster=self.ks.cluster)
                self._lost(f"{type(exc).__name__}: {exc}")
            if self._fresh:  # it worked for a while: start the backoff again
                backoff, self._fresh = 0.25, False
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)
