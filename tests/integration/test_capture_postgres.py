"""PostgreSQL as the capture store, and what happens when it goes away:
TCP senders are slowed down and lose nothing, UDP beyond the queue is
dropped, and every packet is accounted for exactly (received = stored +
dropped + rejected, and the table holds `stored` rows)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from asterfleet.capture.store import Store
from asterfleet.runtime.process import wait_for
from asterfleet.testing.postgres import PgSandbox
from tests.integration.test_capture_collector import CaptureServer
from tests.unit.test_hep_samples import INVITE, hep

pytestmark = pytest.mark.integration


def test_postgres_outage_is_counted_exactly(tmp_path: Path, postgres: PgSandbox) -> None:
    pg = postgres
    capture = CaptureServer(
        tmp_path,
        db=pg.url,
        args=["--queue-size", "3000", "--batch-size", "500"],
    )
    packets = [
        hep(INVITE.replace(b"call-1@test", f"pg-{i}".encode()), ip_proto=6) for i in range(500)
    ]
    stop_sending = threading.Event()
    sent = 0

    def send() -> None:
        nonlocal sent
        deadline = time.monotonic() + 60
        with socket.create_connection(("127.0.0.1", capture.port)) as tcp:
            while not stop_sending.is_set() and time.monotonic() < deadline:
                tcp.sendall(b"".join(packets[:100]))
                sent += 100
                time.sleep(0.01)

    sender = threading.Thread(target=send)
    try:
        capture.start()
        sender.start()
        wait_for(lambda: capture.counts()["stored"] > 0, timeout=30, what="first rows stored")
        pg.stop("fast")
        # While PostgreSQL is down the queue fills, and then TCP is paused:
        # the sender is slowed down, nothing it sent is dropped.
        wait_for(
            lambda: capture.metrics()["asterfleet_capture_tcp_paused"] == 1,
            timeout=30,
            what="TCP paused while PostgreSQL is down",
        )
        # UDP cannot be slowed down: beyond the queue it is dropped, and counted.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i in range(2000):
                udp.sendto(
                    hep(INVITE.replace(b"call-1@test", f"udp-{i}".encode())),
                    ("127.0.0.1", capture.port),
                )
        wait_for(lambda: capture.counts()["dropped"] > 0, timeout=30, what="UDP dropped")
        pg.start()
        stored_before = capture.counts()["stored"]
        wait_for(
            lambda: capture.counts()["stored"] > stored_before + 1000,
            timeout=60,
            what="writes to resume",
        )
    finally:
        stop_sending.set()
        sender.join(60)
    try:
        store = Store(pg.url, create=False)
        try:

            def tcp_rows() -> int:
                with store.engine.connect() as conn:
                    return int(
                        conn.exec_driver_sql(
                            "SELECT count(*) FROM sip_messages WHERE transport = 'tcp'"
                        ).scalar_one()
                    )

            # Every TCP message, none dropped (the UDP burst is in `received`
            # too, so the counters alone cannot say when TCP is all in).
            wait_for(lambda: tcp_rows() == sent, timeout=60, what=f"{sent} TCP messages stored")

            def settled() -> dict[str, float] | None:
                c = capture.counts()
                done = c["stored"] + c["dropped"] + c["rejected"] == c["received"]
                return c if done and c["queued"] == 0 else None

            counts = wait_for(settled, timeout=60, what="every packet accounted for")
            assert isinstance(counts, dict)
            assert counts["rejected"] == 0
            assert counts["dropped"] > 0  # UDP only
            assert store.count() == counts["stored"]
            assert tcp_rows() == sent
            assert counts["received"] - sent <= 2000
        finally:
            store.close()
    finally:
        capture.stop()


def test_rtcp_reports_in_postgres(postgres: PgSandbox) -> None:
    """RTCP rows share a batch with SIP rows; PostgreSQL stores both and the
    MOS filter runs there too."""
    from asterfleet.capture.collector import packet_to_row
    from asterfleet.capture.pager import page_calls
    from asterfleet.capture.search import MessageQuery
    from tests.unit.test_capture_pager import T0, answered
    from tests.unit.test_capture_rtcp import block, report, rtcp_packet

    store = Store(postgres.url)
    try:
        poor = packet_to_row(rtcp_packet("p1", report(block(source=9, fraction=50))), None, T0)
        store.insert_rows([*answered("p1", 0.0, 5.0), poor, *answered("ok1", 1.0, 5.0)])
        (stream,) = store.stream_quality("p1")
        assert (stream.source_ssrc, stream.fraction_lost) == (9, 50 / 256) and stream.mos < 3.5
        calls = page_calls(store, MessageQuery(mos_below=3.5), 50, None).calls
        assert [c.call_id for c in calls] == ["p1"]
        assert store.count() == 14  # 7 SIP messages per call; the report is not among them
    finally:
        store.close()


def test_three_writers_store_a_burst_once(tmp_path: Path, postgres: PgSandbox) -> None:
    """Three writer processes, each on its own PostgreSQL connection, share a
    UDP burst: every datagram that arrived is stored exactly once."""
    from tests.integration.test_capture_collector import udp_burst_is_stored_once

    udp_burst_is_stored_once(
        CaptureServer(tmp_path, db=postgres.url, args=["--writers", "3", "--batch-size", "300"])
    )


def test_a_writer_killed_mid_stream_loses_no_tcp_message(
    tmp_path: Path, postgres: PgSandbox
) -> None:
    """SIGKILL one of two writer processes while TCP flows: the batches it
    had taken go to the other writer, and every TCP message is stored."""
    import os
    import signal

    # Paced, so that each writer holds batches when one is killed.
    args = ["--batch-size", "200", "--max-write-rate", "4000"]
    capture = CaptureServer(tmp_path, db=postgres.url, args=args)
    capture.start()
    try:
        # The test server keeps PostgreSQL's 4 MB of WAL buffers: said once at start.
        started = (tmp_path / "capture.log").read_text()
        assert started.count("capture_store_settings") == 1
        assert "4MB (want 64MB)" in started
        assert capture.process.proc is not None
        children = [
            int(pid)
            for task in Path(f"/proc/{capture.process.proc.pid}/task").glob("*/children")
            for pid in task.read_text().split()
        ]
        # The writers, not multiprocessing's resource tracker.
        writers = [
            pid
            for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(writers) >= 2, writers
        packets = [
            hep(INVITE.replace(b"call-1@test", f"k-{i}".encode()), ip_proto=6) for i in range(6000)
        ]
        with socket.create_connection(("127.0.0.1", capture.port)) as tcp:
            for n, start in enumerate(range(0, len(packets), 200)):
                tcp.sendall(b"".join(packets[start : start + 200]))
                if n == 10:
                    os.kill(writers[0], signal.SIGKILL)
        store = Store(postgres.url, create=False)
        try:

            def stored() -> int:
                with store.engine.connect() as conn:
                    return int(
                        conn.exec_driver_sql(
                            "SELECT count(DISTINCT call_id) FROM sip_messages"
                        ).scalar_one()
                    )

            wait_for(lambda: stored() == 6000, timeout=60, what="every TCP message stored")
            assert store.count() == 6000  # and none twice
        finally:
            store.close()
    finally:
        capture.stop()
