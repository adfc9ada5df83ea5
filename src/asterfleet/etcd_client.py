"""A small async etcd v3 client for asterfleet, on top of aetcd.

What it adds to aetcd: several endpoints with failover, a deadline on every
call, one exception (EtcdUnavailable) for "no etcd answered", and plain
typed results. A watch is a queue fed by a background task, so the
reconcile loops can drain events in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# gRPC's C core logs TLS failures to stderr on its own, a dozen lines per
# attempt; the error that matters reaches the user as one line from here.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.transactions
import aetcd.watcher
import grpc

from asterfleet.errors import EtcdAccessDenied, EtcdUnavailable, UsageError

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
class EtcdSecurity:
    """How to prove who we are to etcd: TLS (a CA to trust, and a client
    certificate) and an etcd user. With a client certificate and no user,
    etcd (``--client-cert-auth``) takes the certificate's common name as the
    user. The password never travels on a command line."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.cacert is not None or self.cert is not None

    def check(self) -> EtcdSecurity:
        """UsageError naming the option when the pieces do not fit together."""
        if (self.cert is None) != (self.key is None):
            raise UsageError(
                "--etcd-cert and --etcd-key go together: give both (the client "
                "certificate and its private key) or neither"
            )
        if self.user is not None and not self.password:
            raise UsageError(
                f"--etcd-user {self.user!r} needs a password: set ASTERFLEET_ETCD_PASSWORD "
                "or --etcd-password-file FILE"
            )
        if self.password and self.user is None:
            raise UsageError("an etcd password was given without --etcd-user NAME")
        for option, path in (
            ("--etcd-cacert", self.cacert),
            ("--etcd-cert", self.cert),
            ("--etcd-key", self.key),
        ):
            if path is not None and not path.is_file():
                raise UsageError(f"{option} {path}: no such file (a PEM file is expected)")
        return self

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC TLS credentials from the PEM files; UsageError if unreadable."""

        def read(option: str, path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UsageError(f"{option} {path}: {exc.strerror}") from None
            if b"-----BEGIN" not in data:
                raise UsageError(f"{option} {path}: not a PEM file")
            return data

        return grpc.ssl_channel_credentials(
            root_certificates=read("--etcd-cacert", self.cacert),
            private_key=read("--etcd-key", self.key),
            certificate_chain=read("--etcd-cert", self.cert),
        )

    def who(self) -> str:
        if self.user:
            return f"user {self.user!r}"
        if self.cert is not None:
            return f"the certificate {self.cert}"
        return "no user"


NO_SECURITY = EtcdSecurity()


# etcd's "require leader" (clientv3.WithRequireLeader): a member that has
# lost its leader (cut off from the quorum) ends the watch with an error and
# refuses calls at once. Without it, a watch there stays open and silent
# while the rest of the cluster moves on.
REQUIRE_LEADER = ("hasleader", "true")


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client over TLS when credentials are given (aetcd 1.0 only
    opens plaintext channels), asking every call for a member with a
    leader; the rest of aetcd is used as it is."""

    metadata: tuple[tuple[str, str], ...] | None
    channel: Any

    def __init__(self, credentials: grpc.ChannelCredentials | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._credentials is None:
            if self._connected.is_set():
                return
            await super().connect()
            # Nothing awaits between aetcd's connect and this: no call can
            # start before the metadata names the leader requirement.
            if REQUIRE_LEADER not in (self.metadata or ()):
                self.metadata = (*(self.metadata or ()), REQUIRE_LEADER)
                self._watcher = aetcd.watcher.Watcher(
                    aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
                )
            return
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            self.channel = aetcd.rpc.secure_channel(
                f"{self._host}:{self._port}",
                self._credentials,
                options=list(self._options.items()),
            )
            if self._username is not None and self._password is not None:
                self.auth_stub = aetcd.rpc.AuthStub(self.channel)
                try:
                    reply = await self.auth_stub.Authenticate(
                        aetcd.rpc.AuthenticateRequest(name=self._username, password=self._password),
                        timeout=self._timeout,
                    )
                except aetcd.rpc.AioRpcError as exc:
                    aetcd.exceptions._handle_exception(exc)
                self.metadata = (("token", reply.token),)
            self.metadata = (*(self.metadata or ()), REQUIRE_LEADER)
            self.kvstub = aetcd.rpc.KVStub(self.channel)
            self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
            self.leasestub = aetcd.rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


# What etcd says when it refuses who we are or what we asked for.
_DENIED_MARKS = (
    "permission denied",
    "authentication failed",
    "user name is empty",
    "user name not found",
    "invalid auth management",
)


def denied(exc: BaseException) -> bool:
    """True when ``exc`` is etcd refusing the credentials or the key."""
    return isinstance(exc, aetcd.exceptions.ClientError) and any(
        mark in str(exc) for mark in _DENIED_MARKS
    )


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


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`Etcd.claim`.

    ``outcome`` is ``kept`` (the key was ours and is rewritten), ``created``
    (it was absent and is now ours) or ``held`` (another lease holds it:
    nothing written; ``holder`` is that lease, 0 for a key without one).
    """

    outcome: str
    revision: int
    holder: int = 0


class _LeaseIs(aetcd.transactions.BaseCompare):  # type: ignore[misc]
    """Compare a key's lease (aetcd has no such compare; etcd 3.3+ does)."""

    def build_compare(self, compare: Any) -> None:
        compare.target = aetcd.rpc.Compare.LEASE
        compare.lease = int(self.value)


class WatchLost(Exception):
    """The watch ended (etcd gone, or the revision was compacted): re-read."""


def _really_cancelled() -> bool:
    """Whether the running task itself is being cancelled, as opposed to a
    CancelledError raised by gRPC for a call whose channel was closed."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


_TRANSIENT: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
    asyncio.TimeoutError,
    OSError,
)


class Etcd:
    """One logical connection to an etcd cluster, failing over between endpoints."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint] | str,
        timeout: float = DEFAULT_TIMEOUT,
        security: EtcdSecurity = NO_SECURITY,
    ):
        self.endpoints = (
            parse_endpoints(endpoints) if isinstance(endpoints, str) else list(endpoints)
        )
        self.timeout = timeout
        self.security = security
        self._credentials = security.credentials() if security.tls else None
        self._index = 0
        self._client: aetcd.Client | None = None

    @property
    def current(self) -> Endpoint:
        return self.endpoints[self._index]

    def _get_client(self) -> aetcd.Client:
        if self._client is None:
            ep = self.current
            self._client = _Client(
                self._credentials,
                host=ep.host,
                port=ep.port,
                username=self.security.user,
                password=self.security.password if self.security.user else None,
                timeout=max(1, round(self.timeout)),
                options=dict(CHANNEL_OPTIONS),
            )
        return self._client

    async def _drop_client(self, failed: aetcd.Client) -> None:
        """Move to the next endpoint because ``failed`` did not answer.

        Several tasks share this connection. When one of them has already
        moved on, the others' calls on the old client fail too: they must
        retry on the new client, not close it and move on again (that
        closed a good client under a call in flight, whose task then saw a
        CancelledError it never asked for and died).
        """
        client = self._client
        if client is None or client is not failed:
            return
        self._client = None
        self._index = (self._index + 1) % len(self.endpoints)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 1.0)

    async def _call(self, what: str, fn: str, *args: Any, **kwargs: Any) -> Any:
        """Run one aetcd call, trying each endpoint once."""
        return await self._with_client(what, lambda c: getattr(c, fn)(*args, **kwargs))

    async def _with_client(self, what: str, fn: Callable[[aetcd.Client], Awaitable[Any]]) -> Any:
        last: BaseException | None = None
        for _ in range(len(self.endpoints)):
            client = self._get_client()
            try:
                return await asyncio.wait_for(fn(client), self.timeout)
            except asyncio.CancelledError as exc:
                if _really_cancelled():
                    raise
                # gRPC cancels the calls of a channel that another task
                # closed: that is a lost connection, not a cancellation.
                last = exc
                await self._drop_client(client)
            except _TRANSIENT as exc:
                last = exc
                await self._drop_client(client)
            except aetcd.exceptions.UnauthenticatedError as exc:
                # The auth token expired (etcd restarted, or idle past its
                # TTL): a new connection authenticates again.
                last = exc
                await self._drop_client(client)
            except aetcd.exceptions.ClientError as exc:
                if denied(exc):
                    raise self._denied(what, exc) from None
                raise
        names = ",".join(str(e) for e in self.endpoints)
        hint = self._tls_hint(last)
        raise EtcdUnavailable(f"etcd at {names} did not answer {what}: {last}{hint}") from last

    def _denied(self, what: str, exc: BaseException) -> EtcdAccessDenied:
        return EtcdAccessDenied(
            f"etcd refused {what} for {self.security.who()}: {exc}; check --etcd-user, "
            "the password and the roles given by 'asterfleet etcd secure'"
        )

    def _tls_hint(self, exc: BaseException | None) -> str:
        text = str(exc or "").lower()
        if any(mark in text for mark in ("ssl", "handshake", "certificate", "tsi_")):
            return (
                " (the TLS handshake failed: check --etcd-cacert, --etcd-cert and --etcd-key "
                "against the server's CA)"
            )
        if self.security.tls is False and "socket closed" in text:
            return " (does this etcd want TLS? give --etcd-cacert)"
        return ""

    async def auth_call(self, method: str, request: Any) -> Any:
        """One call of etcd's Auth service (roles, users, auth enable)."""
        import aetcd.rpc

        async def call(client: aetcd.Client) -> Any:
            await client.connect()
            stub = aetcd.rpc.AuthStub(client.channel)
            try:
                return await getattr(stub, method)(
                    request, timeout=self.timeout, metadata=client.metadata
                )
            except aetcd.rpc.AioRpcError as exc:
                aetcd.exceptions._handle_exception(exc)

        return await self._with_client(f"auth {method}", call)

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

    async def keys_under(self, prefix: str) -> list[tuple[str, int]]:
        """Every key under ``prefix`` with its mod revision: a keys-only read,
        to tell whether a watch has missed a write."""
        result = await self._call(
            f"a read of {prefix}", "get_prefix", prefix.encode(), keys_only=True
        )
        return [(kv.key.decode(errors="replace"), int(kv.mod_revision)) for kv in result]

    async def get(self, key: str) -> KeyValue | None:
        result = await self._call(f"a read of {key}", "get", key.encode())
        if result is None:
            return None
        return KeyValue(key, result.value, result.mod_revision, result.lease)

    async def put(self, key: str, value: bytes, lease: int | None = None) -> int:
        """Write ``value``; the new revision."""
        result = await self._call(f"a write of {key}", "put", key.encode(), value, lease=lease)
        return int(result.header.revision)

    async def claim(self, key: str, value: bytes, lease: int) -> Claim:
        """Write ``value`` under ``lease`` only if the key is ours or absent.

        One transaction: if the key is held by ``lease``, rewrite it; else
        if it does not exist, create it; else read who holds it. Two writers
        of the same key can never overwrite each other's record.
        """
        t = aetcd.transactions
        put = t.Put(key.encode(), value, lease=lease)
        mine = _LeaseIs(key.encode()) == lease
        absent = t.Create(key.encode()) == 0
        inner = t.Txn(compare=[absent], success=[put], failure=[t.Get(key.encode())])
        ok, responses = await self._call(
            f"a claim of {key}", "transaction", compare=[mine], success=[put], failure=[inner]
        )
        if ok:
            return Claim("kept", int(responses[0].response_put.header.revision))
        nested = responses[0].response_txn
        if nested.succeeded:
            return Claim("created", int(nested.header.revision))
        kvs = nested.responses[0].response_range.kvs if nested.responses else []
        holder = int(kvs[0].lease) if kvs else 0
        return Claim("held", int(nested.header.revision), holder)

    async def delete(self, key: str) -> bool:
        result = await self._call(f"a delete of {key}", "delete", key.encode())
        return result is not None

    async def swap(self, key: str, value: bytes | None, mod_revision: int) -> bool:
        """Write ``value`` (None: delete) only if the key's mod revision is still
        ``mod_revision`` (0: the key must not exist). False when someone else
        wrote first: re-read and decide again.

        One etcd transaction, so no write between the caller's read and this
        one can be overwritten.
        """

        async def txn(client: aetcd.Client) -> bool:
            tx = client.transactions
            op = tx.put(key.encode(), value) if value is not None else tx.delete(key.encode())
            succeeded, _ = await client.transaction(
                compare=[tx.mod(key.encode()) == mod_revision], success=[op], failure=[]
            )
            return bool(succeeded)

        return bool(await self._with_client(f"a compare-and-swap of {key}", txn))

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
            if denied(exc):
                raise self._denied(f"a watch of {prefix}", exc) from None
            at = self.current
            await self._drop_client(client)
            raise EtcdUnavailable(f"etcd at {at} refused a watch: {exc}") from exc

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
                if _really_cancelled():
                    raise
                # The channel was closed under the stream (another task
                # failed over): without this the queue would stay silent.
                await queue.put(WatchLost("the watch's connection was closed"))
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
