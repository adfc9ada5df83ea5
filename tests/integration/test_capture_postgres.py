"""PostgreSQL as the capture store, and what happens when it goes away:
the collector keeps receiving and accounts for every packet exactly
(received = stored + dropped + rejected, and the table holds `stored` rows)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.capture.store import Store
from asterfleet.errors import MissingBinary
from asterfleet.runtime.process import wait_for
from asterfleet.testing.postgres import PgSandbox
from tests.integration.test_capture_collector import CaptureServer
from tests.unit.test_hep_samples import INVITE, hep

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres() -> Iterator[PgSandbox]:
    try:
        pg = PgSandbox()
    except MissingBinary as exc:
        pytest.skip(f"PostgreSQL is not installed ({exc})")
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


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
        down_at = capture.counts()
        # While PostgreSQL is down the collector keeps receiving.
        wait_for(
            lambda: capture.counts()["received"] > down_at["received"] + 5000,
            timeout=30,
            what="packets received while PostgreSQL is down",
        )
        pg.start()
        stored_before = capture.counts()["stored"]
        wait_for(
            lambda: capture.counts()["stored"] > stored_before + 1000,
            timeout=30,
            what="writes to resume",
        )
    finally:
        stop_sending.set()
        sender.join(30)
    try:
        counts = capture.settled(sent)
        assert counts["received"] == sent
        assert counts["rejected"] == 0
        assert counts["stored"] + counts["dropped"] == sent
        assert counts["dropped"] > 0  # the small queue overflowed during the outage
        store = Store(pg.url, create=False)
        try:
            assert store.count() == counts["stored"]
        finally:
            store.close()
    finally:
        capture.stop()
