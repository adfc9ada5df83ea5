"""A small async etcd v3 client for asterfleet, on top of aetcd.

What it adds to aetcd: several endpoints with failover, a deadline on every
call, one exception (EtcdUnavailable) for "no etcd answered", and plain
typed results. A watch is a queue fed by a background task, so the
reconcile loops can drain events in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd
import aetcd.exceptions

from asterfleet.errors import EtcdUnavailable, UsageError

DEFAULT_TIMEOUT = 2.0

# gRPC shares subchannels between channels by default, so a new client
# would inherit the old one's reconnect backoff (up to two minutes) after an
# outage. A private pool and a short backoff make a restarted etcd usable
# within about a second.
CHANNEL_OPTIONS = {
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time)
    # or without a stream open, and closes the connection ("too_many_pings").
    "grpc.keepalive_time_ms": 10000,
    "grpc.keepalive_timeout_ms": 5000,
    "grpc.keepalive_permit_without_calls": 0,
}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoints(spec: str) -> list[Endpoint]:
    """``127.0.0.1:2379,http://10.0.0.2:2379`` into endpoints; UsageError on bad input."""
    out: list[Endpoint] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        for scheme in ("http://", "https://"):
            if item.startswith(scheme):
                item = item[len(scheme) :]
        item = item.rstrip("/")
        host, sep, port_s = item.rpartition(":")
        if not sep:
            host, port_s = item, "2379"
        host = host.strip("[]")
        if not host or not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise UsageError(
                f"invalid etcd endpoint {raw.strip()!r} in --etcd {spec!r}: "
                "use host:port, comma-separated (for example 127.0.0.1:2379)"
            )
        out.append(Endpoint(host, int(port_s)))
    if not out:
        raise UsageError(f"--etcd {spec!r} names no endpoint: use host:port[,host:port...]")
    return out


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Snapshot:
    """Everything under a prefix at one revision."""

    revision: int
    items: list[KeyValue]


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    key: str
    value: bytes
    mod_revision: int


class WatchLost(Exception):
    """The watch ended (etcd gone, or the revision was compacted): re-read."""


_TRANSIENT: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
    asyncio.TimeoutError,
    OSError,
)


class Etcd:
    """One logical connection to an etcd cluster, failing over between endpoints."""

    def __init__(self, endpoints: Sequence[Endpoint] | str, timeout: float = DEFAULT_TIMEOUT):
        self.endpoints = (
            parse_endpoints(endpoints) if isinstance(endpoints, str) else list(endpoints)
        )
        self.timeout = timeout
        self._index = 0
        self._client: aetcd.Client | None = None

    @property
    def current(self) -> Endpoint:
        return self.endpoints[self._index]

    def _get_client(self) -> aetcd.Client:
        if self._client is None:
            ep = self.current
            self._client = aetcd.Client(
                host=ep.host,
                port=ep.port,
                timeout=max(1, round(self.timeout)),
                options=dict(CHANNEL_OPTIONS),
            )
        return self._client

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        self._index = (self._index + 1) % len(self.endpoints)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)

    async def _call(self, what: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        """Run one aetcd call, trying each endpoint once."""
        last: BaseException | None = None
        for _ in range(len(self.endpoints)):
            client = self._get_client()
            try:
                return await asyncio.wait_for(getattr(client, fn)(*args, **kwargs), self.timeout)
            except _TRANSIENT as exc:
                last = exc
                await self._drop_client()
        names = ",".join(str(e) for e in self.endpoints)
        raise EtcdUnavailable(f"etcd at {names} did not answer {what}: {last}") from last

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)

    async def __aenter__(self) -> Etcd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- key/value --------------------------------------------------------

    async def get_prefix(self, prefix: str) -> Snapshot:
        result = await self._call(f"a read of {prefix}", "get_prefix", prefix.encode())
        items = [
            KeyValue(kv.key.decode(errors="replace"), kv.value, kv.mod_revision, kv.lease)
            for kv in result
        ]
        return Snapshot(revision=int(result.header.revision), items=items)

    async def get(self, key: str) -> KeyValue | None:
        result = await self._call(f"a read of {key}", "get", key.encode())
        if result is None:
            return None
        return KeyValue(key, result.value, result.mod_revision, result.lease)

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Write ``value``; the new revision."""
        result = await self._call(f"a write of {key}", "put", key.encode(), value, lease=lease)
        return int(result.header.revision)

    async def delete(self, key: str) -> bool:
        result = await self._call(f"a delete of {key}", "delete", key.encode())
        return result is not None

    # -- leases -------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        lease = await self._call("a lease grant", "lease", ttl)
        return int(lease.id)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; its remaining TTL (0 or less: it has expired)."""
        try:
            reply = await self._call("a lease keep-alive", "refresh_lease", lease_id)
        except aetcd.exceptions.ClientError as exc:
            if "lease not found" in str(exc):
                return 0  # expired and gone (etcd restarted, or we were away)
            raise
        # aetcd yields the keep-alive reply (or an iterator of them).
        ttl = getattr(reply, "TTL", None)
        if ttl is None:
            ttl = getattr(reply, "ttl", 0)
        return int(ttl or 0)

    async def revoke(self, lease_id: int) -> None:
        with contextlib.suppress(aetcd.exceptions.ClientError):
            await self._call("a lease revoke", "revoke_lease", lease_id)

    # -- watch ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch_prefix(
        self, prefix: str, start_revision: int
    ) -> AsyncIterator[asyncio.Queue[WatchEvent | WatchLost]]:
        """A queue of events under ``prefix`` from ``start_revision`` on.

        The queue receives a WatchLost when the watch ends for any reason;
        the caller then re-reads the whole prefix and watches again.
        """
        queue: asyncio.Queue[WatchEvent | WatchLost] = asyncio.Queue()
        client = self._get_client()
        try:
            watch = await asyncio.wait_for(
                client.watch_prefix(prefix.encode(), start_revision=start_revision),
                self.timeout,
            )
        except (*_TRANSIENT, aetcd.exceptions.ClientError) as exc:
            await self._drop_client()
            raise EtcdUnavailable(f"etcd at {self.current} refused a watch: {exc}") from exc

        async def pump() -> None:
            try:
                async for ev in watch:
                    kind = "put" if str(ev.kind).upper().endswith("PUT") else "delete"
                    await queue.put(
                        WatchEvent(
                            kind,
                            ev.kv.key.decode(errors="replace"),
                            ev.kv.value,
                            ev.kv.mod_revision,
                        )
                    )
                await queue.put(WatchLost("the watch ended"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await queue.put(WatchLost(f"the watch failed: {exc}"))

        task = asyncio.create_task(pump(), name=f"watch {prefix}")
        try:
            yield queue
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(watch.cancel(), 1.0)
            with contextlib.suppress(BaseException):
                await task
