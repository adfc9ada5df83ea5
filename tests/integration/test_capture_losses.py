"""Back-pressure and every loss counted, and the collector under hostile
TCP clients: a real `asterfleet capture run` process, real sockets."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.capture.store import Store
from asterfleet.runtime.process import wait_for
from tests.integration.test_capture_collector import CaptureServer
from tests.unit.test_hep_samples import INVITE, hep

pytestmark = pytest.mark.integration


def _packet(i: int) -> bytes:
    return hep(INVITE.replace(b"call-1@test", f"bp-{i:08d}@test".encode()), ip_proto=6)


def _stored_call_ids(db: str) -> set[str]:
    store = Store(db, create=False)
    try:
        with store.engine.connect() as conn:
            return {r[0] for r in conn.exec_driver_sql("SELECT call_id FROM sip_messages")}
    finally:
        store.close()


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1))


def test_tcp_at_twice_the_store_speed_for_30s_stores_every_message(tmp_path: Path) -> None:
    """The store takes 2,000 messages/s; the sender offers 4,000/s for 30 s.
    The collector stops reading when its queue is full, so the sender is
    slowed down, and every message it managed to send is stored."""
    store_rate, offered_rate, seconds = 2000, 4000, 30.0
    server = CaptureServer(
        tmp_path,
        args=[
            "--max-write-rate", str(store_rate), "--queue-size", "4000", "--batch-size", "200",
        ],
    )  # fmt: skip
    server.start()
    try:
        sent = 0
        with socket.create_connection(("127.0.0.1", server.port)) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < seconds:
                due = int(elapsed * offered_rate)
                burst = b"".join(_packet(i) for i in range(sent, max(due, sent + 1)))
                tcp.sendall(burst)
                sent = max(due, sent + 1)
                if sent > elapsed * offered_rate:
                    time.sleep(0.005)
            offered = int(seconds * offered_rate)
        # Queue and socket buffers drain at the store's speed.
        counts = server.settled(sent)
        assert counts["dropped"] == 0 and counts["rejected"] == 0, counts
        assert counts["stored"] == sent
        stored = _stored_call_ids(server.db)
        assert stored == {f"bp-{i:08d}@test" for i in range(sent)}
        # The sender really was slowed: without back-pressure it would have
        # sent all it offered. (Kernel socket buffers, auto-tuned to a few MB,
        # absorb part of the excess, so the margin cannot be larger.)
        assert sent < 0.95 * offered, (sent, offered)
        metrics = server.metrics()
        assert metrics["asterfleet_capture_tcp_pauses_total"] >= 1
        assert "tcp_paused" in server.process.log_path.read_text()
    finally:
        assert server.stop() == 0


def test_every_udp_loss_is_counted_and_logged(tmp_path: Path) -> None:
    """UDP cannot be slowed down: what the kernel drops on a full receive
    buffer and what the collector drops on a full queue are both counted, so
    sent = stored + dropped + kernel drops, and both are logged."""
    server = CaptureServer(
        tmp_path,
        args=[
            "--max-write-rate", "500", "--queue-size", "300", "--batch-size", "100",
            "--udp-rcvbuf", "64K",
        ],
    )  # fmt: skip
    server.start()
    try:

        def packet(i: int) -> bytes:
            return hep(INVITE.replace(b"call-1@test", f"u-{i}".encode()))

        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            # Frozen collector: the kernel's buffer overflows.
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                for _ in range(1500):
                    udp.sendto(packet(sent), ("127.0.0.1", server.port))
                    sent += 1
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            # Running collector, slow store: its queue overflows. Paced at
            # about 5,000/s so that the kernel's buffer keeps up.
            while sent < 20_000 and server.counts()["dropped"] == 0:
                for _ in range(50):
                    udp.sendto(packet(sent), ("127.0.0.1", server.port))
                    sent += 1
                time.sleep(0.01)

        def accounted() -> dict[str, float] | None:
            m = server.metrics()
            c = server.counts()
            kernel = m["asterfleet_capture_udp_kernel_drops_total"]
            done = c["queued"] == 0 and c["stored"] + c["dropped"] + c["rejected"] == c["received"]
            return {**c, "kernel": kernel} if done and c["received"] + kernel == sent else None

        counts = wait_for(accounted, timeout=60, what=f"{sent} datagrams accounted for")
        assert isinstance(counts, dict)
        assert counts["kernel"] > 0 and counts["dropped"] > 0, counts
        assert counts["stored"] == len(_stored_call_ids(server.db)) > 0
        # Logged once per interval with the counts (the interval is 10 s).
        expected = (
            f"dropped_total={int(counts['dropped'])}",
            f"kernel_udp_drops_total={int(counts['kernel'])}",
        )
        wait_for(
            lambda: any(
                "capture_loss" in ln and all(e in ln for e in expected)
                for ln in server.process.log_path.read_text().splitlines()
            ),
            timeout=25,
            what=f"a capture_loss log line with {expected}",
        )
    finally:
        assert server.stop() == 0


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_thousand_idle_tcp_connections_do_not_lock_out_senders(
    tmp_path: Path, many_fds: None
) -> None:
    cap, idle = 256, "4s"
    server = CaptureServer(
        tmp_path,
        args=["--max-tcp-connections", str(cap), "--tcp-idle-timeout", idle],
    )
    server.start()
    idle_socks: list[socket.socket] = []
    try:
        rss_before = _rss_kib(server.process.pid)
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(_packet(0)[:20])  # a HEP header that never completes
            idle_socks.append(s)
        wait_for(
            lambda: (
                server.metrics()['asterfleet_capture_tcp_closed_total{reason="cap"}']
                + server.metrics()['asterfleet_capture_tcp_closed_total{reason="idle"}']
                >= 1000 - cap
            ),
            timeout=30,
            what="the connection cap to close the oldest idle connections",
        )
        # A new TCP sender and a UDP sender are still heard.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as tcp:
            tcp.sendall(hep(INVITE.replace(b"call-1@test", b"new-tcp"), ip_proto=6))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(
                    hep(INVITE.replace(b"call-1@test", b"new-udp")), ("127.0.0.1", server.port)
                )
            wait_for(
                lambda: {"new-tcp", "new-udp"} <= _stored_call_ids(server.db),
                timeout=30,
                what="the new senders' messages stored",
            )
            # ... and a silent connection is closed after the idle timeout.
            tcp.settimeout(30)
            assert tcp.recv(10) == b""
        metrics = server.metrics()
        assert metrics["asterfleet_capture_tcp_connections"] <= cap
        # Memory stays bounded: the partial frames of 1,000 connections, then
        # their closing, cost the collector a few MB, not one buffer each forever.
        assert _rss_kib(server.process.pid) - rss_before < 48 * 1024
    finally:
        for s in idle_socks:
            with contextlib.suppress(OSError):
                s.close()
        assert server.stop() == 0
