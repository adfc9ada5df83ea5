"""The HEP v3 collector: UDP and TCP listeners feeding a database writer.

The asyncio receive loop only cuts packets out of the sockets (TCP streams
framed, UDP drained with ``recvmmsg``, TLS on its own listener) and appends
them, as received, to the current batch; full batches go through a bounded
queue to the writer processes (``writers``, four by default). Each one parses
its batches (HEP, then just enough SIP) and stores them on its own database
connection (binary ``COPY`` on PostgreSQL), so parsing and storing use every
core instead of one interpreter's.

When the queue is full, TCP is never dropped: the collector stops reading
from every TCP connection (the kernel's windows fill and the senders slow
down) until the writer has caught up with half the queue. UDP cannot be
slowed, so a UDP batch that does not fit is dropped and counted, and so is
whatever is still queued when the collector stops with the database away.
Every loss is counted and logged once per interval (``capture_loss``),
together with the datagrams the kernel itself dropped on our UDP sockets
(read from ``/proc/net/udp``). At any quiet moment
``received = stored + dropped + rejected``.

Hostile senders: the auth key is checked in constant time before a payload
is decompressed; TCP connections that stay silent past the idle timeout are
closed, and beyond the connection cap the least recently active one is
closed to make room for a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import ssl
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeAlias

import sqlalchemy as sa
import structlog
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector as PromCollector

from asterfleet.capture import mmsg
from asterfleet.capture.hep import (
    REASONS,
    HepError,
    HepPacket,
    StreamFramer,
    parse_hep,
    split_frames,
)
from asterfleet.capture.listen import PROTOCOLS as PROTOCOLS  # re-exported
from asterfleet.capture.listen import Listen
from asterfleet.capture.listen import parse_listen as parse_listen  # re-exported
from asterfleet.capture.mediaclock import MediaClocks
from asterfleet.capture.rtcp import PROTO_RTCP, RtcpError, parse_rtcp
from asterfleet.capture.sip_index import SipError, sip_fields
from asterfleet.capture.store import BATCH_IDS_KEPT_S, RTCP_TAG, Row, Store, normalise_url
from asterfleet.errors import UsageError
from asterfleet.runtime.tasks import supervise

if TYPE_CHECKING:
    from asterfleet.etcd_client import EtcdSecurity

try:
    from asterfleet.capture import _hepfast
except ImportError:  # installed without a C compiler: the Python path does it all
    _hepfast = None  # type: ignore[assignment]

log = structlog.get_logger("asterfleet.capture")

#: Which parser the writers run: ``compiled`` (the Cython fast path, with
#: the Python path for what it leaves) or ``python``.
PARSER_IMPL = "python" if _hepfast is None else "compiled"

_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux value


def packet_to_row(data: bytes, auth_key: bytes | None, now_us: int) -> Row:
    """One HEP packet → a row for :class:`Store`; HepError/SipError otherwise."""
    pkt = parse_hep(data, auth_key)
    if pkt.proto_type == PROTO_RTCP:
        return rtcp_row(pkt, now_us)
    if pkt.proto_type != 1:
        raise HepError("not_sip", f"HEP protocol type {pkt.proto_type} is not SIP")
    method, status, call_id, cseq, from_user, to_user, user_agent, opens = sip_fields(pkt.payload)
    ts = pkt.ts_sec * 1_000_000 + pkt.ts_usec if pkt.ts_sec else now_us
    return (
        ts,
        pkt.src_ip,
        pkt.src_port,
        pkt.dst_ip,
        pkt.dst_port,
        pkt.transport,
        pkt.capture_id,
        pkt.capture_host,
        call_id,
        method,
        status,
        cseq,
        from_user,
        to_user,
        user_agent,
        pkt.correlation_id,
        pkt.payload,
        opens,
    )


def rtcp_row(pkt: HepPacket, now_us: int) -> Row:
    """An RTCP report (HEP type 5) → ``(RTCP_TAG, block rows)`` for :class:`Store`,
    figures at 8,000 Hz and the clock undecided (:mod:`.mediaclock` decides it)."""
    if not pkt.correlation_id:
        raise HepError("no_call_id", "HEP RTCP packet has no correlation id (Call-ID)")
    ts = pkt.ts_sec * 1_000_000 + pkt.ts_usec if pkt.ts_sec else now_us
    try:
        blocks = parse_rtcp(pkt.payload, ts)
    except RtcpError as exc:
        raise HepError("bad_rtcp", str(exc)) from None
    head = (ts, pkt.correlation_id, pkt.capture_host)
    addr = (pkt.src_ip, pkt.src_port, pkt.dst_ip, pkt.dst_port)
    return (
        RTCP_TAG,
        tuple(
            (
                *head,
                *addr,
                b.ssrc,
                b.report_type,
                b.source_ssrc,
                b.fraction_lost,
                b.packets_lost,
                b.jitter_ms,
                b.rtt_ms,
                b.mos,
                None,
            )
            for b in blocks
        ),
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
    #: Datagrams the kernel dropped on our UDP sockets (receive buffer full).
    kernel_udp_drops: int = 0
    tcp_connections: int = 0
    #: TCP connections closed by us, by reason (idle, cap).
    tcp_closed: Counter[str] = field(default_factory=Counter)
    #: Times TCP reading was paused because the write queue was full.
    tcp_pauses: int = 0
    tcp_paused: bool = False

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
            "kernel_udp_drops": self.kernel_udp_drops,
            "tcp_closed": dict(self.tcp_closed),
            "tcp_pauses": self.tcp_pauses,
        }


class _Metrics(PromCollector):
    def __init__(self, counters: Counters, refresh: Any) -> None:
        self.c = counters
        self.refresh = refresh

    def collect(self) -> Iterator[Any]:
        self.refresh()
        c = self.c
        yield CounterMetricFamily(
            "asterfleet_capture_received", "HEP packets received", value=c.received
        )
        yield CounterMetricFamily(
            "asterfleet_capture_stored", "SIP messages stored in the database", value=c.stored
        )
        yield CounterMetricFamily(
            "asterfleet_capture_dropped",
            "Valid messages dropped (UDP with the write queue full, or still queued when "
            "the collector stopped with the database away)",
            value=c.dropped,
        )
        yield CounterMetricFamily(
            "asterfleet_capture_udp_kernel_drops",
            "Datagrams the kernel dropped on the collector's UDP sockets (receive buffer full)",
            value=c.kernel_udp_drops,
        )
        yield GaugeMetricFamily(
            "asterfleet_capture_tcp_connections",
            "Open HEP TCP connections",
            value=c.tcp_connections,
        )
        closed = CounterMetricFamily(
            "asterfleet_capture_tcp_closed",
            "TCP connections the collector closed, by reason (idle timeout, connection cap)",
            labels=["reason"],
        )
        for reason in ("idle", "cap"):
            closed.add_metric([reason], c.tcp_closed.get(reason, 0))
        yield closed
        yield CounterMetricFamily(
            "asterfleet_capture_tcp_pauses",
            "Times reading from TCP paused because the write queue was full (back-pressure)",
            value=c.tcp_pauses,
        )
        yield GaugeMetricFamily(
            "asterfleet_capture_tcp_paused",
            "1 while TCP reading is paused for back-pressure",
            value=int(c.tcp_paused),
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
        yield InfoMetricFamily(
            "asterfleet_capture_parser",
            "The HEP/SIP parser the writers run (impl: compiled or python)",
            value={"impl": PARSER_IMPL},
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
    #: Close a TCP connection silent for this long (seconds).
    tcp_idle_timeout: float = 300.0
    #: At most this many TCP connections; a new one closes the least recently active.
    tcp_max_connections: int = 1024
    #: Requested UDP receive buffer (bytes).
    udp_rcvbuf: int = 32 << 20
    #: Store at most this many messages a second (None: as fast as the database goes).
    max_write_rate: float | None = None
    #: Losses are logged at most once per this many seconds.
    loss_log_interval: float = 10.0
    #: Writer processes: each parses its batches and stores them on its own
    #: connection. Each waits for its commit's flush to disk: with four, two
    #: cores stay busy while others wait (two stored 140,000/s, four 159,000/s).
    writers: int = 4
    #: Certificate chain and key (PEM) for ``tls:`` listeners.
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(slots=True)
class Batch:
    """Received packets on their way to a writer: ``count`` packets, each
    item one packet or, when ``framed`` (TCP), a chunk of consecutive whole
    packets as the stream carried them (no object per packet)."""

    items: list[bytes] = field(default_factory=list)
    count: int = 0
    framed: bool = False
    #: Names the batch wherever it goes: a batch stored, then sent again
    #: (its writer died before acknowledging it, or the commit's answer was
    #: lost), is stored once (see :meth:`Store.insert_rows`).
    id: bytes = field(default_factory=lambda: os.urandom(16))

    def packets(self) -> list[bytes]:
        """One item per packet."""
        if not self.framed:
            return self.items
        return [p for chunk in self.items for p in split_frames(chunk)]


#: What a writer process acknowledges for one batch: stored, dropped, rejected
#: by reason, and the seconds the database write took (None: not written).
Ack = tuple[int, int, dict[str, int], float | None]


def writer_count(settings: CollectorSettings) -> int:
    """Writer processes to run: SQLite takes one writer at a time (a second
    one would only wait for its lock), PostgreSQL as many as asked."""
    if "://" not in settings.db_url or settings.db_url.startswith("sqlite"):
        return 1
    return max(1, settings.writers)


class Writer:
    """Hands batches of received packets to the writer processes and counts
    the outcome.

    The receiving process only frames packets; each writer process parses
    (HEP, SIP, RTCP) and inserts on its own database connection, so parsing
    and storing run on every core instead of taking turns on one GIL.
    Batches travel pickled over a pipe (raw packets: well under 1 µs each);
    each process has at most two batches in flight, so a slow one gets fewer.
    """

    def __init__(self, settings: CollectorSettings, counters: Counters, latency: Histogram):
        self.settings = settings
        self.counters = counters
        self.latency = latency
        self.lock = threading.Lock()
        self._outbox: queue.Queue[Batch | None] = queue.Queue()
        ctx = multiprocessing.get_context("spawn")
        self._workers: list[_WriterProcess] = [
            _WriterProcess(ctx, settings, index, self) for index in range(writer_count(settings))
        ]

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    # Called from the receive loop: never blocks.
    def offer(self, batch: Batch, droppable: bool = True) -> bool:
        """Queue a batch; False when it was dropped (only ``droppable``
        batches are, when the queue is full). A batch that must not be
        dropped (TCP) is queued anyway: the caller stops reading instead."""
        n = batch.count
        with self.lock:
            if droppable and self.counters.queued + n > self.settings.queue_rows:
                self.counters.dropped += n
                return False
            self.counters.queued += n
        self._outbox.put_nowait(batch)
        return True

    @property
    def full(self) -> bool:
        return self.counters.queued >= self.settings.queue_rows

    def settle(self, ack: Ack) -> None:
        stored, dropped, rejected, seconds = ack
        with self.lock:
            self.counters.queued -= stored + dropped + sum(rejected.values())
            self.counters.stored += stored
            self.counters.dropped += dropped
            self.counters.rejected.update(rejected)
            if stored:
                self.counters.batches += 1
        if seconds is not None:
            self.latency.observe(seconds)

    def hand_on(self, batch: Batch, dead: _WriterProcess) -> None:
        """A batch a writer process took and never stored: to another one,
        or counted as dropped when none is left."""
        if any(w is not dead and not w.finished.is_set() for w in self._workers):
            self._outbox.put(batch)
        else:
            self.settle((0, batch.count, {}, None))

    def next_batch(self) -> Batch | None:
        batch = self._outbox.get()
        if batch is None:
            self._outbox.put(None)  # every sender sees the end
        return batch

    def finish(self, timeout: float) -> None:
        """Write what is queued (up to ``timeout``), then stop. Whatever is
        still unwritten after that is counted as dropped."""
        self._outbox.put(None)
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.finished.wait(max(0.0, deadline - time.monotonic()))
        for worker in self._workers:
            worker.stop()
        with self.lock:
            self.counters.dropped += self.counters.queued
            self.counters.queued = 0


class _WriterProcess:
    """One writer process and the two threads that feed it and read its acks."""

    IN_FLIGHT = 2

    def __init__(self, ctx: Any, settings: CollectorSettings, index: int, writer: Writer) -> None:
        self.writer = writer
        self._batch_rx, self._batch_tx = ctx.Pipe(duplex=False)
        self._ack_rx, self._ack_tx = ctx.Pipe(duplex=False)
        self._slots = threading.Semaphore(self.IN_FLIGHT)
        #: Batches sent and not yet acknowledged, oldest first (acks come in order).
        self._pending: collections.deque[Batch] = collections.deque()
        self._pending_lock = threading.Lock()
        self._orphaned = False
        self.process = ctx.Process(
            target=_writer_process,
            args=(settings, index, self._batch_rx, self._ack_tx),
            name=f"capture-writer-{index}",
            daemon=True,
        )
        self._sender = threading.Thread(
            target=self._send_loop, name=f"capture-send-{index}", daemon=True
        )
        self._acks = threading.Thread(
            target=self._ack_loop, name=f"capture-acks-{index}", daemon=True
        )
        self.finished = threading.Event()

    def start(self) -> None:
        self.process.start()
        # The child has its own copies now. Ours would keep the pipes open
        # after the child dies, hiding its death (no EOF, no broken pipe).
        self._batch_rx.close()
        self._ack_tx.close()
        self._sender.start()
        self._acks.start()

    def _send_loop(self) -> None:
        while True:
            self._slots.acquire()
            batch = self.writer.next_batch()
            try:
                if batch is None:
                    self._batch_tx.send_bytes(b"")
                    return
                with self._pending_lock:
                    self._pending.append(batch)
                wire = (batch.items, batch.count, batch.framed, batch.id)
                self._batch_tx.send_bytes(pickle.dumps(wire, protocol=5))
            except OSError:
                # The writer is gone: _ack_loop hands its unacknowledged batches
                # on, unless it already has; then this late one is ours to.
                with self._pending_lock:
                    late = self._orphaned and any(b is batch for b in self._pending)
                    if late:
                        self._pending = collections.deque(
                            b for b in self._pending if b is not batch
                        )
                if late and batch is not None:
                    self.writer.hand_on(batch, self)
                return

    def _ack_loop(self) -> None:
        while True:
            try:
                ack = self._ack_rx.recv()
            except (EOFError, OSError):
                break
            if ack is None:
                break
            with self._pending_lock:
                if self._pending:
                    self._pending.popleft()
            self.writer.settle(ack)
            self._slots.release()
        # A process that died (could not start, or crashed) leaves batches it
        # never acknowledged: they go to the other writers, not to the floor.
        with self._pending_lock:
            orphans, self._pending = list(self._pending), collections.deque()
            self._orphaned = True
        self.finished.set()
        for batch in orphans:
            self.writer.hand_on(batch, self)
        if orphans:
            log.warning("writer_lost", batches=len(orphans), exitcode=self.process.exitcode)

    def stop(self) -> None:
        if not self.finished.is_set():
            with contextlib.suppress(OSError):
                self._batch_tx.close()
            self.finished.wait(5)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)


def parse_batch(
    packets: Sequence[bytes], auth_key: bytes | None, now_us: int
) -> tuple[list[Row], Counter[str]]:
    """Rows of the packets that parse, and the others counted by reason
    (the Python path: the reference the compiled one is tested against)."""
    rows: list[Row] = []
    rejected: Counter[str] = Counter()
    append = rows.append
    for data in packets:
        try:
            append(packet_to_row(data, auth_key, now_us))
        except (HepError, SipError) as exc:
            rejected[exc.reason] += 1
    return rows, rejected


@dataclass(slots=True)
class ParsedBatch:
    """One batch, ready for :meth:`Store.insert_rows`: row tuples and, from
    the compiled path on PostgreSQL, binary COPY tuples of ``copied`` rows
    stamped on ``days``."""

    rows: list[Row]
    rejected: Counter[str]
    copy: bytes = b""
    copied: int = 0
    days: set[int] = field(default_factory=set)
    #: The received batch's :attr:`Batch.id` (None: store it without one).
    id: bytes | None = None
    #: Where the RTCP rows are in :attr:`rows` (their clock is set before the insert).
    rtcp_at: list[int] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return len(self.rows) + self.copied


def parse_for_store(
    batch: Batch | list[bytes], auth_key: bytes | None, now_us: int, binary: bool
) -> ParsedBatch:
    """Parse a batch with the compiled path when it is built (``binary``:
    as COPY tuples for PostgreSQL), the packets it leaves with the Python
    path; with the Python path alone otherwise."""
    if isinstance(batch, list):
        batch = Batch(batch, len(batch))
    if _hepfast is None:
        rows, rejected = parse_batch(batch.packets(), auth_key, now_us)
        return ParsedBatch(rows, rejected, id=batch.id, rtcp_at=_rtcp_at(rows, 0))
    copy, rows, stored, days, left, fast_rejected = _hepfast.parse_packets(
        batch.items, auth_key, now_us, binary, batch.framed
    )
    rejected = Counter(fast_rejected)
    rtcp_at: list[int] = []
    if left:
        # Only what the compiled path leaves can be RTCP: its SIP rows are not looked at.
        slow_rows, slow_rejected = parse_batch(left, auth_key, now_us)
        rtcp_at = _rtcp_at(slow_rows, len(rows))
        rows += slow_rows
        rejected.update(slow_rejected)
    return ParsedBatch(rows, rejected, copy, stored if binary else 0, days, batch.id, rtcp_at)


def _rtcp_at(rows: list[Row], offset: int) -> list[int]:
    return [offset + i for i, row in enumerate(rows) if row[0] == RTCP_TAG]


def _writer_process(
    settings: CollectorSettings, index: int, batches: Connection, acks: Connection
) -> None:
    """A database writer (child process): read batches, parse, insert, acknowledge."""
    # The parent decides when we stop (a signal to the process group included).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox: queue.Queue[Batch | None] = queue.Queue()
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
            inbox.put(Batch(*pickle.loads(data)))

    threading.Thread(target=reader, name="capture-inbox", daemon=True).start()
    db = _Database(settings, abort, retention=index == 0)
    writers = writer_count(settings)
    pace = _Pace(settings.max_write_rate / writers if settings.max_write_rate else None)
    auth = settings.auth_key.encode() if settings.auth_key is not None else None
    binary = normalise_url(settings.db_url).startswith("postgresql")
    clocks = MediaClocks()
    try:
        while True:
            db.retention()
            if index == 0:
                db.settle_clocks(clocks)
            try:
                batch = inbox.get(timeout=1.0)
            except queue.Empty:
                continue
            if batch is None:
                break
            parsed = parse_for_store(batch, auth, int(time.time() * 1_000_000), binary)
            if parsed.rtcp_at:
                db.stamp_clocks(clocks, parsed)
            pace.wait(parsed.stored, abort)
            stored, dropped, seconds = db.write(parsed) if parsed.stored else (0, 0, None)
            acks.send((stored, dropped, dict(parsed.rejected), seconds))
    finally:
        with contextlib.suppress(OSError):
            acks.send(None)
        db.close()


class _Pace:
    """Keeps the writer at or below ``rate`` messages a second."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.rows = 0

    def wait(self, rows: int, abort: threading.Event) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        due = self.start + self.rows / self.rate
        if due < now - 1.0:  # idle for a while: no credit for the past
            self.start, self.rows = now, 0
            due = now
        self.rows += rows
        if due > now:
            abort.wait(due - now)


class _Database:
    """Inserts with retry while the database is away; runs retention."""

    def __init__(
        self, settings: CollectorSettings, abort: threading.Event, retention: bool = True
    ) -> None:
        self.settings = settings
        self.abort = abort
        self.runs_retention = retention
        #: Opened at the first write: a database away when the writer starts
        #: is waited for like one that goes away later.
        self._store: Store | None = None
        self.ok = True
        self._clocks_ok = True
        self._next_retention = time.monotonic()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.settings.db_url)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def write(self, batch: ParsedBatch) -> tuple[int, int, float | None]:
        """(stored, dropped, seconds) for one batch; retries until the
        database answers or the parent gives up on us."""
        delay = 0.1
        while True:
            started = time.perf_counter()
            try:
                fresh = self.store.insert_rows(batch.rows, batch.copy, batch.days, batch.id)
            except Exception as exc:
                # A database going away mid-batch does not always say so in
                # the error's class: if it no longer answers, wait for it.
                # (UsageError: the store could not be opened at all yet.)
                away = isinstance(exc, UsageError) or _is_connection_error(exc)
                if not away and self._answers():
                    log.error(
                        "batch_refused",
                        rows=batch.stored,
                        error_type=type(exc).__name__,
                        error=str(exc)[:200],
                    )
                    return 0, batch.stored, None
                if self.ok:
                    log.warning("database_unavailable", error=str(exc).splitlines()[0][:200])
                    self.ok = False
            else:
                if not self.ok:
                    log.info("database_back", url=_safe_url(self.settings.db_url))
                    self.ok = True
                if not fresh:
                    # Stored already: its first commit went through unanswered,
                    # or the writer that made it died before saying so.
                    log.info("batch_stored_before", rows=batch.stored)
                return batch.stored, 0, time.perf_counter() - started
            if self.abort.wait(delay):
                return 0, batch.stored, None
            delay = min(delay * 2, 2.0)

    def stamp_clocks(self, clocks: MediaClocks, batch: ParsedBatch) -> None:
        """The RTP clock of the batch's RTCP reports, where the store knows it."""
        if not self.ok:
            return  # the pass decides them once the database is back
        try:
            store = self.store
        except Exception:
            return  # the write waits for the database and says so
        clocks.stamp(store, batch.rows, batch.rtcp_at)

    def settle_clocks(self, clocks: MediaClocks) -> None:
        """The pass over RTCP reports whose clock was not decided when stored."""
        if not self.ok or not clocks.due(time.monotonic()):
            return
        try:
            settled = clocks.settle(self.store)
        except Exception as exc:
            if self._clocks_ok:  # once until a pass works again: the write logs the outage
                log.warning("rtcp_clock_pass_failed", error=str(exc).splitlines()[0][:200])
            self._clocks_ok = False
            return
        self._clocks_ok = True
        if settled:
            log.info("rtcp_clocks_settled", reports=settled)

    def _answers(self) -> bool:
        try:
            with self.store.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception:
            return False
        return True

    def retention(self) -> None:
        s = self.settings
        if not self.ok or not self.runs_retention:  # one writer prunes: the others insert
            return
        now = time.monotonic()
        if now < self._next_retention:
            return
        self._next_retention = now + s.retention_interval
        try:
            self.store.forget_batches(time.time() - BATCH_IDS_KEPT_S)
            if s.retention_s is None and s.max_bytes is None:
                return
            removed = self.store.apply_retention(s.retention_s, s.max_bytes)
        except Exception as exc:
            log.warning("retention_failed", error=str(exc).splitlines()[0][:200])
            return
        if removed:
            log.info("retention", removed=removed)


def _is_connection_error(exc: BaseException) -> bool:
    """The database (or our connection to it) went away, by the error's class
    or a base of it: a connection PostgreSQL closed when it was stopped says
    so with ``AdminShutdown``, a subclass of the driver's OperationalError."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"OperationalError", "InterfaceError", "ConnectionError"}) or (
        isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)
    )


def _safe_url(url: str) -> str:
    with contextlib.suppress(Exception):
        return sa.engine.make_url(normalise_url(url)).render_as_string(hide_password=True)
    return "?"


def udp_socket_drops(proc_net_udp: str, inodes: Iterable[int]) -> dict[int, int]:
    """The ``drops`` column of ``/proc/net/udp`` (or ``udp6``) for these socket
    inodes: datagrams the kernel discarded because the receive buffer was full."""
    wanted = set(inodes)
    out: dict[int, int] = {}
    lines = proc_net_udp.splitlines()
    if not lines:
        return out
    header = lines[0].split()
    # "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt
    #  uid timeout inode ref pointer drops": tx:rx and tr:tm are one field
    # each in the rows but two words in the header.
    try:
        inode_col = header.index("inode") - 2
        drops_col = header.index("drops") - 2
    except ValueError:
        return out
    for line in lines[1:]:
        cols = line.split()
        if len(cols) <= max(inode_col, drops_col):
            continue
        with contextlib.suppress(ValueError):
            inode = int(cols[inode_col])
            if inode in wanted:
                out[inode] = out.get(inode, 0) + int(cols[drops_col])
    return out


def read_kernel_udp_drops(inodes: Sequence[int]) -> int:
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                text = f.read()
        except OSError:
            continue
        total += sum(udp_socket_drops(text, inodes).values())
    return total


class Collector:
    """Listeners + batcher + writer; run with ``await collector.serve()``."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.counters = Counters()
        self.registry = CollectorRegistry()
        self.registry.register(_Metrics(self.counters, self._refresh_kernel_drops))
        self.latency = Histogram(
            "asterfleet_capture_batch_write_seconds",
            "Time to write one batch of messages to the database",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.writer = Writer(settings, self.counters, self.latency)
        # UDP packets may be dropped when the queue is full; TCP (and TLS) never are.
        self._udp_batch = Batch()
        #: Datagrams received as one chunk each system call (compiled receiver).
        self._udp_chunks = Batch(framed=True)
        self._tcp_batch = Batch(framed=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._udp_sockets: list[socket.socket] = []
        self._udp_inodes: list[int] = []
        self._kernel_drops_base = 0
        #: Open TCP connections, least recently active first.
        self._tcp: OrderedDict[_TcpProtocol, float] = OrderedDict()
        self.bound: list[Listen] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loss_logged: dict[str, int] = {}
        self._loss_next = 0.0
        self._pause_log_next = 0.0
        self._pauses_logged = 0
        self._resume_log_due = False

    # -- hot path ------------------------------------------------------------

    def ingest(self, packets: list[bytes]) -> None:
        """Queue received datagrams (the writer processes parse them)."""
        self.counters.received += len(packets)
        batch = self._udp_batch
        batch.items += packets
        batch.count += len(packets)
        if batch.count >= self.settings.batch_size:
            self.flush()

    def ingest_datagrams(self, chunk: bytes, count: int, odd: list[bytes]) -> None:
        """Queue ``count`` datagrams received back to back as ``chunk``, and
        ``odd`` ones whose HEP length is not their own (rejected later)."""
        self.counters.received += count
        batch = self._udp_chunks
        if count:
            batch.items.append(chunk)
            batch.count += count
        if odd:
            self.ingest(odd)
        if batch.count >= self.settings.batch_size:
            self.flush()

    def ingest_stream(self, chunk: bytes, count: int) -> None:
        """Queue ``count`` whole packets a TCP stream carried as ``chunk``."""
        self.counters.received += count
        batch = self._tcp_batch
        batch.items.append(chunk)
        batch.count += count
        if batch.count >= self.settings.batch_size:
            self.flush()

    def _udp_ready(self, receiver: _Datagrams) -> None:
        # Drain what is waiting, many datagrams per system call, but boundedly
        # so that TCP gets its turn.
        if _hepfast is not None and isinstance(receiver, _hepfast.DatagramReceiver):
            for _ in range(16):
                try:
                    chunk, count, odd = receiver.receive()
                except OSError as exc:
                    log.warning("udp_error", error=str(exc))
                    return
                if count or odd:
                    self.ingest_datagrams(chunk, count, odd)
                if count + len(odd) < 64:
                    return
            return
        for _ in range(16):
            try:
                packets = (
                    receiver.receive()
                    if isinstance(receiver, mmsg.Receiver)
                    else _recv_some(receiver, 256)
                )
            except OSError as exc:
                log.warning("udp_error", error=str(exc))
                return
            if packets:
                self.ingest(packets)
            if len(packets) < 64:
                return

    def reject(self, reason: str) -> None:
        self.counters.received += 1
        self.counters.rejected[reason] += 1

    def flush(self) -> None:
        if self._tcp_batch.count:
            batch, self._tcp_batch = self._tcp_batch, Batch(framed=True)
            self.writer.offer(batch, droppable=False)
        if self._udp_batch.count:
            batch, self._udp_batch = self._udp_batch, Batch()
            self.writer.offer(batch)
        if self._udp_chunks.count:
            batch, self._udp_chunks = self._udp_chunks, Batch(framed=True)
            self.writer.offer(batch)
        if self.writer.full and not self.counters.tcp_paused:
            self._pause_tcp()

    # -- back-pressure -------------------------------------------------------

    def _pause_tcp(self) -> None:
        self.counters.tcp_paused = True
        self.counters.tcp_pauses += 1
        for proto in self._tcp:
            proto.pause()
        # Under sustained overload this cycles several times a second: one
        # line (and its resume) per loss-log interval, with the count.
        now = time.monotonic()
        if now >= self._pause_log_next:
            self._pause_log_next = now + self.settings.loss_log_interval
            log.info(
                "tcp_paused",
                queued=self.counters.queued,
                connections=len(self._tcp),
                pauses=self.counters.tcp_pauses - self._pauses_logged,
                pauses_total=self.counters.tcp_pauses,
            )
            self._pauses_logged = self.counters.tcp_pauses
            self._resume_log_due = True

    def _maybe_resume_tcp(self) -> None:
        if not self.counters.tcp_paused:
            return
        if self.counters.queued > self.settings.queue_rows // 2:
            return
        self.counters.tcp_paused = False
        now = time.monotonic()
        # Waiting for us is not idleness: every connection starts a new idle period.
        for proto in self._tcp:
            self._tcp[proto] = now
            proto.resume()
        if self._resume_log_due:
            self._resume_log_due = False
            log.info("tcp_resumed", queued=self.counters.queued, connections=len(self._tcp))

    # -- TCP connections -----------------------------------------------------

    def tcp_opened(self, proto: _TcpProtocol) -> None:
        cap = self.settings.tcp_max_connections
        while len(self._tcp) >= cap:
            oldest, _ = self._tcp.popitem(last=False)
            self.counters.tcp_closed["cap"] += 1
            log.warning("tcp_closed", peer=oldest.peer, reason="cap", cap=cap)
            oldest.close()
        self._tcp[proto] = time.monotonic()
        self.counters.tcp_connections = len(self._tcp)
        if self.counters.tcp_paused:
            proto.pause()

    def tcp_active(self, proto: _TcpProtocol) -> None:
        tcp = self._tcp
        if proto in tcp:
            tcp[proto] = time.monotonic()
            tcp.move_to_end(proto)

    def tcp_closed(self, proto: _TcpProtocol) -> None:
        self._tcp.pop(proto, None)
        self.counters.tcp_connections = len(self._tcp)

    def _close_idle(self, now: float) -> None:
        if self.counters.tcp_paused:
            return
        limit = now - self.settings.tcp_idle_timeout
        tcp = self._tcp
        while tcp:
            proto, last = next(iter(tcp.items()))
            if last > limit:
                break
            del tcp[proto]
            self.counters.tcp_closed["idle"] += 1
            log.info("tcp_closed", peer=proto.peer, reason="idle")
            proto.close()
        self.counters.tcp_connections = len(tcp)

    # -- losses --------------------------------------------------------------

    def _refresh_kernel_drops(self) -> None:
        if self._udp_inodes:
            now = read_kernel_udp_drops(self._udp_inodes)
            self.counters.kernel_udp_drops = max(0, now - self._kernel_drops_base)

    def _log_losses(self, now: float) -> None:
        if now < self._loss_next:
            return
        self._loss_next = now + self.settings.loss_log_interval
        self._refresh_kernel_drops()
        c = self.counters
        totals = {
            "dropped": c.dropped,
            "kernel_udp_drops": c.kernel_udp_drops,
            "rejected": c.rejected_total,
        }
        deltas = {k: v - self._loss_logged.get(k, 0) for k, v in totals.items()}
        self._loss_logged = totals
        if any(deltas.values()):
            log.warning(
                "capture_loss",
                interval_s=self.settings.loss_log_interval,
                **deltas,
                **{f"{k}_total": v for k, v in totals.items()},
                queued=c.queued,
            )

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            self.flush()
            now = time.monotonic()
            self._maybe_resume_tcp()
            self._close_idle(now)
            self._log_losses(now)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        # Open the database first: a bad URL fails before we listen.
        probe = Store(self.settings.db_url)
        try:
            below = probe.settings_below_capture()
        finally:
            probe.close()
        if below:
            log.warning(
                "capture_store_settings",
                below=below,
                hint="at high rates the inserting backends then write the WAL themselves: see "
                "asterfleet.capture.pgsettings and deploy/ (durability is not touched)",
            )
        wants_tls = any(spec.proto == "tls" for spec in self.settings.listen)
        tls = self._tls_context() if wants_tls else None
        self.writer.start()
        loop = asyncio.get_running_loop()
        for spec in self.settings.listen:
            family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
            if spec.proto == "udp":
                sock = socket.socket(family, socket.SOCK_DGRAM)
                # Bursts land in the kernel buffer while a batch is parsed;
                # FORCE (root) goes past net.core.rmem_max.
                size = self.settings.udp_rcvbuf
                try:
                    sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
                except OSError:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                try:
                    sock.bind((spec.host, spec.port))
                except OSError as exc:
                    sock.close()
                    raise UsageError(f"cannot listen on {spec}: {exc.strerror}") from None
                self._udp_inodes.append(os.fstat(sock.fileno()).st_ino)
                sock.setblocking(False)
                self._udp_sockets.append(sock)
                source: _Datagrams = sock
                if _hepfast is not None:
                    source = _hepfast.DatagramReceiver(sock.fileno())
                elif mmsg.available():
                    source = mmsg.Receiver(sock.fileno())
                loop.add_reader(sock.fileno(), self._udp_ready, source)
                port = sock.getsockname()[1]
            else:
                ssl_ctx = tls if spec.proto == "tls" else None
                try:
                    server = await loop.create_server(
                        lambda: _TcpProtocol(self),
                        spec.host,
                        spec.port,
                        reuse_address=True,
                        backlog=1024,
                        ssl=ssl_ctx,
                    )
                except OSError as exc:
                    raise UsageError(f"cannot listen on {spec}: {exc.strerror}") from None
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
            self.bound.append(Listen(spec.proto, spec.host, port))
        self._kernel_drops_base = read_kernel_udp_drops(self._udp_inodes)
        # Supervised: an error in one pass must not end the flushing, the
        # resuming of paused TCP readers and the loss logs for good.
        self._flusher = asyncio.create_task(
            supervise("flush", self._flush_loop, asyncio.Event(), log), name="flush"
        )
        log.info(
            "capture_listening",
            listen=",".join(str(b) for b in self.bound),
            db=_safe_url(self.writer.settings.db_url),
            auth=self.settings.auth_key is not None,
            parser=PARSER_IMPL,
        )
        if _hepfast is None:
            log.warning(
                "capture_parser_python",
                detail="the compiled parser is not built: every packet is parsed in Python "
                "(several times slower); install gcc and python3-dev, then reinstall asterfleet",
            )

    def _tls_context(self) -> ssl.SSLContext:
        cert, key = self.settings.tls_cert, self.settings.tls_key
        if not cert:
            raise UsageError(
                "a tls: listener needs --tls-cert (and --tls-key unless the cert holds the key)"
            )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # No TLS 1.3 session tickets. A HEP sender only writes: the tickets
        # sit unread in its socket, so when it closes, its kernel sends a
        # reset instead of a FIN, and ours throws away whatever of the
        # stream we had not read yet (a sender that sent and closed lost
        # its last packets: 4 of 50, one run in five).
        ctx.num_tickets = 0
        try:
            ctx.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"TLS certificate {cert!r} / key {key!r} cannot be loaded ({exc}): give PEM files"
            ) from None
        return ctx

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for server in self._servers:
            server.close()
        for sock in self._udp_sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        for proto in list(self._tcp):
            proto.close()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self.flush()
        await asyncio.to_thread(self.writer.finish, self.settings.drain_timeout)
        self._log_losses(float("inf"))
        log.info("capture_stopped", **self.counters.snapshot())


#: What a UDP socket is read with: the compiled receiver, recvmmsg through
#: ctypes, or the socket itself.
_Datagrams: TypeAlias = "_hepfast.DatagramReceiver | mmsg.Receiver | socket.socket"


def _recv_some(sock: socket.socket, most: int) -> list[bytes]:
    """Up to ``most`` datagrams waiting on a non-blocking socket (no recvmmsg)."""
    out: list[bytes] = []
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while len(out) < most:
            out.append(sock.recv(65535))
    return out


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.collector.tcp_opened(self)

    def pause(self) -> None:
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self._paused:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def data_received(self, data: bytes) -> None:
        framer = self.framer
        chunk, count = framer.feed_chunk(data)
        self.collector.tcp_active(self)
        if count:
            self.collector.ingest_stream(chunk, count)
        if framer.error is not None and self.transport is not None:
            # Framing is lost: count the rest of the stream once and hang up.
            self.collector.reject(framer.error.reason)
            log.warning("tcp_stream_rejected", peer=self.peer, reason=framer.error.reason)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.collector.tcp_closed(self)
        if self.framer.pending:
            self.collector.reject("truncated")
        if exc is not None:
            log.warning("tcp_connection_lost", peer=self.peer, error=repr(exc))


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
    endpoints: str,
    key: str,
    value: str,
    ttl: int,
    stop: asyncio.Event,
    security: EtcdSecurity | None = None,
) -> None:
    """Keep ``key`` = ``value`` under a lease until ``stop``; reconnect on failure."""
    from asterfleet.etcd_client import NO_SECURITY, Etcd

    while not stop.is_set():
        client = Etcd(endpoints, security=security or NO_SECURITY)
        try:
            lease = await client.grant(ttl)
            await client.put(key, value.encode(), lease=lease)
            log.info("capture_advertised", key=key, ttl=ttl)
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), ttl / 3)
                if not stop.is_set() and await client.keepalive(lease) <= 0:
                    break  # the lease expired: advertise again under a new one
            with contextlib.suppress(Exception):
                await client.revoke(lease)
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
    etcd_security: EtcdSecurity | None = None,
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
        tasks.append(
            asyncio.create_task(
                advertise_in_etcd(etcd[0], key, value, lease_ttl, stop, etcd_security)
            )
        )
    await stop.wait()
    log.info("capture_stopping")
    for task in tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
    await collector.stop()
    if http is not None:
        http[0].shutdown()
    return collector.counters
