"""One MOS per stream everywhere: an opus call (48 kHz RTP clock) whose
jitter is fine at 48 kHz and poor when misread at 8 kHz, captured by the
real collector (HEP over UDP and TCP) into SQLite and into PostgreSQL. The
"MOS below" filter (CLI and console), the CLI's listing, the call page,
the statistics and their Prometheus gauge give the same figure, whether the report came after
the call's SDP answer or before it."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from asterfleet.capture.hep import HepPacket, encode_hep
from asterfleet.capture.pager import page_calls
from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import Store
from asterfleet.runtime.process import wait_for
from asterfleet.testing.postgres import PgSandbox
from tests.integration.test_capture_collector import CaptureServer
from tests.unit.test_capture_mediaclock import JITTER_UNITS, MOS_8K, MOS_48K, OPUS_ANSWER
from tests.unit.test_capture_rtcp import block, report
from tests.unit.test_capture_sdp import ASTERISK_PCMU, OPUS_OFFER, sdp

pytestmark = pytest.mark.integration

CALLER, BOX = "10.0.0.1", "10.0.0.3"
#: A desk phone's offer; the box answers PCMU (ASTERISK_PCMU).
PHONE_OFFER = sdp("m=audio 4000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000")


def sip_packets(call_id: str, offer: str, answer: str, at: int) -> list[bytes]:
    """The INVITE with its offer and the 200 OK with the answer, as HEP."""
    out = []
    for first, body, src, dst in (
        ("INVITE sip:100@pbx SIP/2.0", offer, CALLER, BOX),
        ("SIP/2.0 200 OK", answer, BOX, CALLER),
    ):
        raw = (
            f"{first}\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bK-{call_id}\r\n"
            f"From: <sip:alice@pbx>;tag=a\r\nTo: <sip:100@pbx>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
        pkt = HepPacket(payload=raw, src_ip=src, dst_ip=dst, src_port=5060, dst_port=5060,
                        ts_sec=at, ts_usec=len(out) * 20_000, capture_host="ast1")  # fmt: skip
        out.append(encode_hep(pkt))
    return out


def rtcp_packet(call_id: str, at: int) -> bytes:
    doc = report(block(source=0xB2, jitter=JITTER_UNITS))
    return encode_hep(
        HepPacket(payload=json.dumps(doc).encode(), proto_type=5, src_ip=BOX, dst_ip=CALLER,
                  src_port=10001, dst_port=20001, ts_sec=at, correlation_id=call_id,
                  capture_host="ast1")
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "capture.db")
        return
    pg = request.getfixturevalue("postgres")
    assert isinstance(pg, PgSandbox)
    yield pg.url


def test_one_mos_per_stream_everywhere(tmp_path: Path, db_url: str) -> None:
    now = int(time.time())
    server = CaptureServer(tmp_path, db=db_url).start()
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.create_connection(("127.0.0.1", server.port))
        to = ("127.0.0.1", server.port)
        try:
            # 1. Calls whose answer is stored before their first report.
            for packet in sip_packets("opus@x", OPUS_OFFER, OPUS_ANSWER, now - 20) + sip_packets(
                "pcmu@x", PHONE_OFFER, ASTERISK_PCMU, now - 19
            ):
                udp.sendto(packet, to)
            server.settled(4)
            tcp.sendall(rtcp_packet("opus@x", now - 15) + rtcp_packet("pcmu@x", now - 14))
            # 2. A call whose report is stored before its SIP (a SIP batch late).
            udp.sendto(rtcp_packet("late@x", now - 10), to)
            server.settled(7)
            tcp.sendall(b"".join(sip_packets("late@x", OPUS_OFFER, OPUS_ANSWER, now - 18)))
            counts = server.settled(9)
        finally:
            udp.close()
            tcp.close()
        assert (counts["stored"], counts["rejected"], counts["dropped"]) == (9, 0, 0)

        store = Store(db_url, create=False)
        try:

            def below() -> list[str]:
                query = MessageQuery(mos_below=3.5)
                return sorted(c.call_id for c in page_calls(store, query, 50, None).calls)

            # The late call's report is rewritten by the collector's pass.
            wait_for(lambda: below() == ["pcmu@x"], timeout=20, what="the pass over late reports")
            with store.engine.connect() as conn:
                stored = dict(
                    conn.exec_driver_sql("SELECT call_id, clock_hz FROM rtcp_reports").all()
                )
            assert stored == {"opus@x": 48000, "late@x": 48000, "pcmu@x": 8000}
            # Only the late one was rewritten: the others were decided as stored.
            log = tmp_path / "capture.log"
            wait_for(lambda: "rtcp_clocks_settled" in log.read_text(), 10, what="the pass's log")
            settled = [
                line for line in log.read_text().splitlines() if "rtcp_clocks_settled" in line
            ]
            assert len(settled) == 1 and re.search(r"reports\W+1\b", settled[0]), settled
        finally:
            store.close()

        expect = {"opus@x": MOS_48K, "late@x": MOS_48K, "pcmu@x": MOS_8K}
        out = server.cli("search", "--mos-below", "3.5", "--json")
        assert out.returncode == 0, out.stderr
        assert [(c["call_id"], c["min_mos"]) for c in json.loads(out.stdout)] == [
            ("pcmu@x", MOS_8K)
        ]
        out = server.cli("search", "--json")
        assert {c["call_id"]: c["min_mos"] for c in json.loads(out.stdout)} == expect
        out = server.cli("search", "--call-id", "late@x")
        assert out.returncode == 0, out.stderr
        assert "MOS" in out.stdout and f" {MOS_48K:.2f} " in out.stdout

        mean = round(sum(expect.values()) / 3, 6)
        with console(tmp_path, db_url) as client:
            assert call_pages(client) == expect
            assert stats_means(client, db_url) == {"api": mean, "gauge": mean}
    finally:
        assert server.stop() == 0


@contextlib.contextmanager
def console(tmp_path: Path, db_url: str) -> Iterator[TestClient]:
    from tests.unit.test_console_calls import make_client
    from tests.unit.test_console_web import login

    with make_client(tmp_path, db_url) as client:
        login(client)
        yield client


def call_pages(client: TestClient) -> dict[str, float]:
    """Each call's MOS in its API and on its page, which must agree; and
    the console's MOS filter."""
    out = {}
    for call_id in ("opus@x", "late@x", "pcmu@x"):
        (stream,) = client.get(f"/api/v1/calls/{call_id}").json()["streams"]
        assert stream["mos"] == stream["min_mos"]
        page = " ".join(client.get(f"/calls/{call_id}").text.split())
        assert f"{stream['mos']:.2f}" in page
        out[call_id] = stream["mos"]
    listed = client.get("/api/v1/calls", params={"mos_below": "3.5"}).json()["calls"]
    assert [c["call_id"] for c in listed] == ["pcmu@x"]
    return out


def stats_means(client: TestClient, db_url: str) -> dict[str, float]:
    """Mean MOS of the statistics API and of the Prometheus gauge (the node
    that answered all three calls)."""
    from asterfleet.console.stats import CallStatsMetrics, window_stats

    api = client.get("/api/v1/stats", params={"window": "1h"}).json()["total"]["mos_mean"]
    db = client.app.state.test_db
    registry = CollectorRegistry()
    metrics = CallStatsMetrics(registry)
    store = Store(db_url, create=False)
    try:
        metrics.update(window_stats(store, db, "test", time.time()))
    finally:
        store.close()
    gauges = [
        s.value
        for family in registry.collect()
        if family.name == "asterfleet_calls_mos_mean"
        for s in family.samples
        if s.labels.get("kind") == "node"
    ]
    assert len(gauges) == 1, gauges
    return {"api": round(api, 6), "gauge": round(gauges[0], 6)}


def test_an_old_postgresql_store_gets_the_column_and_its_reports_their_clock(
    postgres: PgSandbox,
) -> None:
    """A PostgreSQL store from before ``clock_hz``: upgraded when opened (by a
    reader too), its report's clock then decided from the call's SDP."""
    from asterfleet.capture.mediaclock import MediaClocks
    from tests.unit.test_capture_mediaclock import opus_call, rtcp_rows, views

    store = Store(postgres.url)
    try:
        store.insert_rows(opus_call("o@x") + rtcp_rows("o@x"))
        with store.engine.begin() as conn:  # as the previous version left it
            conn.exec_driver_sql("ALTER TABLE rtcp_reports DROP COLUMN clock_hz")
    finally:
        store.close()
    store = Store(postgres.url, create=False)
    try:
        assert views(store, "o@x", 48000) == {"page": MOS_48K, "below": True, "stats": MOS_8K}
        assert MediaClocks().settle(store, now=1.0) == 1
        assert views(store, "o@x", 48000) == {"page": MOS_48K, "below": False, "stats": MOS_48K}
    finally:
        store.close()
    read_only = Store(postgres.url, create=False)
    try:
        assert read_only._driver is not None  # upgraded: opened the quick way
    finally:
        read_only.close()
