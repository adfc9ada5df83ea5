"""The HEP v3 collector: UDP and TCP listeners feeding a database writer.

The asyncio receive loop parses each packet (HEP, then just enough SIP) and
appends a row to the current batch; full batches go through a bounded queue
to one writer process that owns the database. When the queue is full the
batch is dropped and counted, so the receive loop never waits for the
database, and at any quiet moment ``received = stored + dropped + rejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import queue
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector as PromCollector

from asterfleet.capture.hep import REASONS, HepError, StreamFramer, parse_hep
from asterfleet.capture.sip_index import SipError, parse_sip
from asterfleet.capture.store import Row, Store, normalise_url
from asterfleet.errors import UsageError

log = structlog.get_logger("asterfleet.capture")

PROTOCOLS = ("udp", "tcp")
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux value


@dataclass(frozen=True)
class Listen:
    proto: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}:{host}:{self.port}"


def parse_listen(text: str) -> list[Listen]:
    """``udp:127.0.0.1:9060,tcp:127.0.0.1:9060`` → listeners, or UsageError."""
    out: list[Listen] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        proto, _, rest = item.partition(":")
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if proto.lower() not in PROTOCOLS or not host or not port.isdigit():
            raise UsageError(
                f"listen address {item!r}: expected udp:HOST:PORT or tcp:HOST:PORT, "
                "e.g. udp:0.0.0.0:9060,tcp:0.0.0.0:9060"
            )
        if not 0 <= int(port) <= 65535:
            raise UsageError(f"listen address {item!r}: port must be 0..65535")
        out.append(Listen(proto.lower(), host, int(port)))
    if not out:
        raise UsageError("--listen is empty: give e.g. udp:0.0.0.0:9060,tcp:0.0.0.0:9060")
    return out


def packet_to_row(data: bytes, auth_key: str | None, now_us: int) -> Row:
    """One HEP packet → a row for :class:`Store`; HepError/SipError otherwise."""
    pkt = parse_hep(data)
    if auth_key is not None and pkt.auth_key != auth_key:
        raise HepError("auth", "wrong or missing auth key")
    if pkt.proto_type != 1:
        raise HepError("not_sip", f"HEP protocol type {pkt.proto_type} is not SIP")
    sip = parse_sip(pkt.payload)
    ts = pkt.ts_sec * 1_000_000 + pkt.ts_usec if pkt.ts_sec else now_us
    return (
        ts,
        pkt.src_ip,
        pkt.src_port,
        pkt.dst_ip,
        pkt.dst_port,
        pkt.transport,
        pkt.capture_id,
        pkt.node_name,
        sip.call_id,
        sip.method,
        sip.status,
        sip.cseq,
        sip.from_user,
        sip.to_user,
        sip.user_agent,
        pkt.correlation_id,
        pkt.payload,
    )


@dataclass
class Counters:
    """Every packet is counted exactly once as stored, dropped or rejected
    (after being counted as received)."""

    received: int = 0
    stored: int = 0
    dropped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    queued: int = 0
    batches: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "dropped": self.dropped,
            "rejected": dict(self.rejected),
            "queued": self.queued,
        }


class _Metrics(PromCollector):
    def __init__(self, counters: Counters) -> None:
        self.c = counters

    def collect(self) -> Iterator[Any]:
        c = self.c
        yield CounterMetricFamily(
            "asterfleet_capture_received", "HEP packets received", value=c.received
        )
        yield CounterMetricFamily(
            "asterfleet_capture_stored", "SIP messages stored in the database", value=c.stored
        )
        yield CounterMetricFamily(
            "asterfleet_capture_dropped",
            "Valid messages dropped because the write queue was full or the database failed",
            value=c.dropped,
        )
        rejected = CounterMetricFamily(
            "asterfleet_capture_rejected", "HEP packets rejected, by reason", labels=["reason"]
        )
        for reason in REASONS:
            rejected.add_metric([reason], c.rejected.get(reason, 0))
        yield rejected
        yield GaugeMetricFamily(
            "asterfleet_capture_queued", "Messages waiting for the database writer", value=c.queued
        )


@dataclass
class CollectorSettings:
    listen: Sequence[Listen]
    db_url: str
    auth_key: str | None = None
    retention_s: float | None = None
    max_bytes: int | None = None
    batch_size: int = 5000
    flush_interval: float = 0.05
    queue_rows: int = 200_000
    retention_interval: float = 60.0
    drain_timeout: float = 10.0


class Writer:
    """Hands batches to the database writer process and counts the outcome.

    Parsing stays in the receiving process; inserting runs in a child
    process with its own interpreter, so the two use both cores instead of
    taking turns on one GIL. Batches travel pickled over a pipe (about
    1.5 µs a row); the child answers each with an acknowledgement.
    """

    def __init__(self, settings: CollectorSettings, counters: Counters, latency: Histogram):
        self.settings = settings
        self.counters = counters
        self.latency = latency
        self.lock = threading.Lock()
        self._outbox: queue.Queue[list[Row] | None] = queue.Queue()
        ctx = multiprocessing.get_context("spawn")
        self._batch_rx, self._batch_tx = ctx.Pipe(duplex=False)
        self._ack_rx, self._ack_tx = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_writer_process,
            args=(settings, self._batch_rx, self._ack_tx),
            name="capture-writer",
            daemon=True,
        )
        self._sender = threading.Thread(target=self._send_loop, name="capture-send", daemon=True)
        self._acks = threading.Thread(target=self._ack_loop, name="capture-acks", daemon=True)
        self._finished = threading.Event()

    def start(self) -> None:
        self._process.start()
        self._sender.start()
        self._acks.start()

    # Called from the receive loop: never blocks.
    def offer(self, batch: list[Row]) -> None:
        n = len(batch)
        with self.lock:
            if self.counters.queued + n > self.settings.queue_rows:
                self.counters.dropped += n
                return
            self.counters.queued += n
        self._outbox.put_nowait(batch)

    def _send_loop(self) -> None:
        while True:
            batch = self._outbox.get()
            try:
                if batch is None:
                    self._batch_tx.send_bytes(b"")
                    return
                self._batch_tx.send_bytes(pickle.dumps(batch, protocol=5))
            except OSError:
                if batch is not None:
                    self._settle(len(batch), 0, None)
                return

    def _ack_loop(self) -> None:
        while True:
            try:
                ack = self._ack_rx.recv()
            except (EOFError, OSError):
                break
            if ack is None:
                break
            stored, dropped, seconds = ack
            self._settle(stored, dropped, seconds)
        self._finished.set()

    def _settle(self, stored: int, dropped: int, seconds: float | None) -> None:
        with self.lock:
            self.counters.queued -= stored + dropped
            self.counters.stored += stored
            self.counters.dropped += dropped
            if stored:
                self.counters.batches += 1
        if seconds is not None:
            self.latency.observe(seconds)

    def finish(self, timeout: float) -> None:
        """Write what is queued (up to ``timeout``), then stop. Whatever is
        still unwritten after that is counted as dropped."""
        self._outbox.put(None)
        self._finished.wait(timeout)
        if not self._finished.is_set():
            with contextlib.suppress(OSError):
                self._batch_tx.close()
            self._finished.wait(5)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        with self.lock:
            self.counters.dropped += self.counters.queued
            self.counters.queued = 0


def _writer_process(settings: CollectorSettings, batches: Connection, acks: Connection) -> None:
    """The database writer (child process): read batches, insert, acknowledge."""
    # The parent decides when we stop (a signal to the process group included).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox: queue.Queue[list[Row] | None] = queue.Queue()
    abort = threading.Event()

    def reader() -> None:
        while True:
            try:
                data = batches.recv_bytes()
            except (EOFError, OSError):
                abort.set()
                inbox.put(None)
                return
            if not data:
                inbox.put(None)
                return
            inbox.put(pickle.loads(data))

    threading.Thread(target=reader, name="capture-inbox", daemon=True).start()
    db = _Database(settings, abort)
    try:
        while True:
            db.retention()
            try:
                batch = inbox.get(timeout=1.0)
            except queue.Empty:
                continue
            if batch is None:
                break
            acks.send(db.write(batch))
    finally:
        with contextlib.suppress(OSError):
            acks.send(None)
        db.close()


class _Database:
    """Inserts with retry while the database is away; runs retention."""

    def __init__(self, settings: CollectorSettings, abort: threading.Event) -> None:
        self.settings = settings
        self.abort = abort
        self.store = Store(settings.db_url)
        self.ok = True
        self._next_retention = time.monotonic()

    def close(self) -> None:
        self.store.close()

    def write(self, batch: list[Row]) -> tuple[int, int, float | None]:
        """(stored, dropped, seconds) for one batch; retries until the
        database answers or the parent gives up on us."""
        delay = 0.1
        while True:
            started = time.perf_counter()
            try:
                self.store.insert_rows(batch)
            except Exception as exc:
                if not _is_connection_error(exc):
                    log.error("batch_refused", rows=len(batch), error=str(exc)[:200])
                    return 0, len(batch), None
                if self.ok:
                    log.warning("database_unavailable", error=str(exc).splitlines()[0][:200])
                    self.ok = False
            else:
                if not self.ok:
                    log.info("database_back", url=_safe_url(self.settings.db_url))
                    self.ok = True
                return len(batch), 0, time.perf_counter() - started
            if self.abort.wait(delay):
                return 0, len(batch), None
            delay = min(delay * 2, 2.0)

    def retention(self) -> None:
        s = self.settings
        if (s.retention_s is None and s.max_bytes is None) or not self.ok:
            return
        now = time.monotonic()
        if now < self._next_retention:
            return
        self._next_retention = now + s.retention_interval
        try:
            removed = self.store.apply_retention(s.retention_s, s.max_bytes)
        except Exception as exc:
            log.warning("retention_failed", error=str(exc).splitlines()[0][:200])
            return
        if removed:
            log.info("retention", removed=removed)


def _is_connection_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in ("OperationalError", "InterfaceError", "ConnectionError") or (
        isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)
    )


def _safe_url(url: str) -> str:
    with contextlib.suppress(Exception):
        return sa.engine.make_url(normalise_url(url)).render_as_string(hide_password=True)
    return "?"


class Collector:
    """Listeners + batcher + writer; run with ``await collector.serve()``."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.counters = Counters()
        self.registry = CollectorRegistry()
        self.registry.register(_Metrics(self.counters))
        self.latency = Histogram(
            "asterfleet_capture_batch_write_seconds",
            "Time to write one batch of messages to the database",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.writer = Writer(settings, self.counters, self.latency)
        self._batch: list[Row] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._transports: list[asyncio.BaseTransport] = []
        self.bound: list[Listen] = []
        self._flusher: asyncio.Task[None] | None = None

    # -- hot path ------------------------------------------------------------

    def ingest(self, packets: Iterable[bytes]) -> None:
        counters = self.counters
        batch = self._batch
        auth = self.settings.auth_key
        now_us = int(time.time() * 1_000_000)
        for data in packets:
            counters.received += 1
            try:
                batch.append(packet_to_row(data, auth, now_us))
            except (HepError, SipError) as exc:
                counters.rejected[exc.reason] += 1
        if len(batch) >= self.settings.batch_size:
            self.flush()

    def reject(self, reason: str) -> None:
        self.counters.received += 1
        self.counters.rejected[reason] += 1

    def flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self.writer.offer(batch)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            self.flush()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        # Open the database first: a bad URL fails before we listen.
        probe = Store(self.settings.db_url)
        probe.close()
        self.writer.start()
        loop = asyncio.get_running_loop()
        for spec in self.settings.listen:
            family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
            if spec.proto == "udp":
                sock = socket.socket(family, socket.SOCK_DGRAM)
                # Bursts land in the kernel buffer while a batch is parsed;
                # FORCE (root) goes past net.core.rmem_max.
                try:
                    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 32 << 20)
                except OSError:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
                try:
                    sock.bind((spec.host, spec.port))
                except OSError as exc:
                    sock.close()
                    raise UsageError(f"cannot listen on {spec}: {exc.strerror}") from None
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), sock=sock
                )
                self._transports.append(transport)
                port = sock.getsockname()[1]
            else:
                try:
                    server = await loop.create_server(
                        lambda: _TcpProtocol(self), spec.host, spec.port, reuse_address=True
                    )
                except OSError as exc:
                    raise UsageError(f"cannot listen on {spec}: {exc.strerror}") from None
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
            self.bound.append(Listen(spec.proto, spec.host, port))
        self._flusher = asyncio.create_task(self._flush_loop())
        log.info(
            "capture_listening",
            listen=",".join(str(b) for b in self.bound),
            db=_safe_url(self.writer.settings.db_url),
            auth=self.settings.auth_key is not None,
        )

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for transport in self._transports:
            transport.close()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.flush()
        await asyncio.to_thread(self.writer.finish, self.settings.drain_timeout)
        log.info("capture_stopped", **self.counters.snapshot())


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.collector.ingest((data,))

    def error_received(self, exc: Exception) -> None:
        log.warning("udp_error", error=str(exc))


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)

    def data_received(self, data: bytes) -> None:
        framer = self.framer
        packets = framer.feed(data)
        if packets:
            self.collector.ingest(packets)
        if framer.error is not None and self.transport is not None:
            # Framing is lost: count the rest of the stream once and hang up.
            self.collector.reject(framer.error.reason)
            log.warning("tcp_stream_rejected", peer=self.peer, reason=framer.error.reason)
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.framer.pending:
            self.collector.reject("truncated")


# -- running it as a daemon ------------------------------------------------------


def advertised_value(bound: Sequence[Listen], advertise_host: str | None, auth: bool) -> str:
    """The JSON put under the cluster's ``capture`` key: where to send HEP."""
    import json

    def host(h: str) -> str:
        if advertise_host:
            return advertise_host
        if h in ("0.0.0.0", "::"):
            return socket.getfqdn()
        return h

    return json.dumps(
        {
            "hep_version": 3,
            "auth": auth,
            **{b.proto: str(Listen(b.proto, host(b.host), b.port)).split(":", 1)[1] for b in bound},
        },
        sort_keys=True,
    )


async def advertise_in_etcd(
    endpoints: str, key: str, value: str, ttl: int, stop: asyncio.Event
) -> None:
    """Keep ``key`` = ``value`` under a lease until ``stop``; reconnect on failure."""
    import aetcd

    first = endpoints.split(",")[0].strip()
    first = first.split("://", 1)[-1]
    host, _, port = first.rpartition(":")
    while not stop.is_set():
        client = aetcd.Client(host or "127.0.0.1", int(port or 2379))
        try:
            lease = await client.lease(ttl)
            await client.put(key.encode(), value.encode(), lease=lease)
            log.info("capture_advertised", key=key, ttl=ttl)
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), ttl / 3)
                if not stop.is_set():
                    await lease.refresh()
            with contextlib.suppress(Exception):
                await lease.revoke()
        except Exception as exc:
            log.warning("etcd_unavailable", endpoints=endpoints, error=str(exc)[:200])
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
        finally:
            with contextlib.suppress(Exception):
                await client.close()


async def run(
    settings: CollectorSettings,
    metrics_listen: tuple[str, int] | None = None,
    etcd: tuple[str, str] | None = None,
    advertise_host: str | None = None,
    lease_ttl: int = 10,
) -> Counters:
    """Run until SIGINT/SIGTERM; the final counters."""
    from prometheus_client import start_http_server

    collector = Collector(settings)
    await collector.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    http = None
    if metrics_listen is not None:
        try:
            http = start_http_server(metrics_listen[1], metrics_listen[0], collector.registry)
        except OSError as exc:
            await collector.stop()
            raise UsageError(
                f"cannot serve metrics on {metrics_listen[0]}:{metrics_listen[1]}: {exc.strerror}"
            ) from None
        log.info("metrics_listening", address=f"{metrics_listen[0]}:{metrics_listen[1]}")
    tasks: list[asyncio.Task[None]] = []
    if etcd is not None:
        from asterfleet.fleet.keys import Keyspace

        value = advertised_value(collector.bound, advertise_host, settings.auth_key is not None)
        key = Keyspace(etcd[1]).capture
        tasks.append(asyncio.create_task(advertise_in_etcd(etcd[0], key, value, lease_ttl, stop)))
    await stop.wait()
    log.info("capture_stopping")
    for task in tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
    await collector.stop()
    if http is not None:
        http[0].shutdown()
    return collector.counters
