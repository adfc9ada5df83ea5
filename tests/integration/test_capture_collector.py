"""The capture server as a real process: HEP over UDP and TCP in, every
packet counted as stored, rejected (by reason) or dropped; retention."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from asterfleet.capture.store import Store
from asterfleet.runtime.ports import free_port, free_port_both
from asterfleet.runtime.process import ManagedProcess, wait_for
from tests.unit.test_hep_samples import INVITE, OK, hep

pytestmark = pytest.mark.integration


class CaptureServer:
    """`asterfleet capture run` on free loopback ports."""

    def __init__(self, work: Path, db: str | None = None, args: Sequence[str] = ()) -> None:
        self.work = work
        self.db = db or str(work / "capture.db")
        self.port = free_port_both()
        self.metrics_port = free_port()
        argv = [
            sys.executable, "-m", "asterfleet.cli.capture", "run",
            "--listen", f"udp:127.0.0.1:{self.port},tcp:127.0.0.1:{self.port}",
            "--db", self.db, "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *args,
        ]  # fmt: skip
        self.process = ManagedProcess("capture", argv, work / "capture.log")

    def start(self) -> CaptureServer:
        self.process.start()
        wait_for(self.metrics, timeout=30, what=f"capture server ({self.process.log_tail()})")
        return self

    def stop(self) -> int | None:
        return self.process.stop(grace=30)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def counts(self) -> dict[str, float]:
        m = self.metrics()
        rejected = {
            k.split('"')[1]: v
            for k, v in m.items()
            if k.startswith("asterfleet_capture_rejected_total")
        }
        return {
            "received": m["asterfleet_capture_received_total"],
            "stored": m["asterfleet_capture_stored_total"],
            "dropped": m["asterfleet_capture_dropped_total"],
            "queued": m["asterfleet_capture_queued"],
            "rejected": sum(rejected.values()),
            **{f"rejected_{k}": v for k, v in rejected.items()},
        }

    def settled(self, received: int) -> dict[str, float]:
        """Wait until ``received`` packets are all stored, dropped or rejected."""

        seen: dict[str, float] = {}

        def done() -> dict[str, float] | None:
            c = self.counts()
            seen.update(c)
            ok = c["received"] >= received and c["queued"] == 0
            return c if ok and c["stored"] + c["dropped"] + c["rejected"] == c["received"] else None

        try:
            result = wait_for(done, timeout=60, what=f"{received} packets accounted for")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: counts {seen}\n{self.process.log_tail()}") from None
        assert isinstance(result, dict)
        return result

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "asterfleet.cli.capture", *args, "--db", self.db],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[CaptureServer]:
    server = CaptureServer(tmp_path, args=["--auth-key", "s3cret"])
    try:
        yield server.start()
    finally:
        server.stop()


def test_malformed_and_unauthorised_packets_are_counted_and_skipped(
    capture: CaptureServer,
) -> None:
    good = [
        hep(INVITE, auth_key="s3cret"),
        hep(OK, auth_key="s3cret", ip_proto=6, src_ip="10.0.0.2", dst_ip="10.0.0.1"),
    ]
    bad = {
        "auth": [hep(INVITE, auth_key="wrong"), hep(INVITE)],
        "bad_magic": [b"\x00garbage\xff" * 5],
        "truncated": [hep(INVITE, auth_key="s3cret")[:5]],
        "bad_length": [hep(INVITE, auth_key="s3cret")[:-4]],
        "not_sip": [hep(b"a log line", auth_key="s3cret", proto_type=100)],
        "bad_rtcp": [hep(b'{"rtcp":1}', auth_key="s3cret", proto_type=5, correlation_id="c1")],
        "bad_sip": [hep(b"INVITE sip:x SIP/2.0\r\n\r\n", auth_key="s3cret")],
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for packet in good + [p for ps in bad.values() for p in ps]:
            udp.sendto(packet, ("127.0.0.1", capture.port))
    # Over TCP: two good packets, then garbage that loses the framing.
    with socket.create_connection(("127.0.0.1", capture.port)) as tcp:
        tcp.sendall(good[0] + good[1] + b"NOT-HEP-AT-ALL")
        tcp.settimeout(10)
        assert tcp.recv(10) == b""  # the server hangs up
    sent = len(good) * 2 + sum(len(ps) for ps in bad.values()) + 1
    counts = capture.settled(sent)
    assert counts["stored"] == 4 and counts["dropped"] == 0
    for reason, packets in bad.items():
        expected = len(packets) + (1 if reason == "bad_magic" else 0)
        assert counts[f"rejected_{reason}"] == expected, (reason, counts)

    out = capture.cli("search", "--call-id", "call-1@test", "--json")
    assert out.returncode == 0, out.stderr
    (call,) = json.loads(out.stdout)
    assert (call["final_status"], call["messages"], call["from_user"]) == (200, 4, "alice")
    assert call["node"] == "10.0.0.2:5060"

    bad_db = subprocess.run(
        [sys.executable, "-m", "asterfleet.cli.capture", "search", "--db", "/nonexistent.db"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad_db.returncode == 2 and "does not exist" in bad_db.stderr


def test_retention_removes_old_messages(tmp_path: Path) -> None:
    server = CaptureServer(
        tmp_path, args=["--retention", "1h", "--retention-interval", "0.5s"]
    ).start()
    try:
        now = int(time.time())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i in range(20):
                payload = INVITE.replace(b"call-1@test", f"old-{i}".encode())
                udp.sendto(hep(payload, ts_sec=now - 7200), ("127.0.0.1", server.port))
                udp.sendto(hep(INVITE, ts_sec=now), ("127.0.0.1", server.port))
        assert server.settled(40)["stored"] == 40

        def old_gone() -> bool:
            out = server.cli("search", "--messages", "--limit", "100", "--json")
            return (
                out.returncode == 0
                and [m["call_id"] for m in json.loads(out.stdout)] == ["call-1@test"] * 20
            )

        wait_for(old_gone, timeout=20, what="retention to delete the old messages")
    finally:
        assert server.stop() == 0


def test_rtcp_reports_are_stored_per_call_and_found_by_mos(tmp_path: Path) -> None:
    """HEP type 5 (RTCP as JSON, as Asterisk's res_hep_rtcp sends it) over
    UDP to a running collector: stored per call and stream, readable back,
    and ``capture search --mos-below`` finds the call with the poor stream."""
    from asterfleet.capture.store import Store
    from tests.unit.test_capture_rtcp import block, report

    server = CaptureServer(tmp_path).start()
    try:
        now = int(time.time())
        good = INVITE.replace(b"call-1@test", b"good@test")
        bad = INVITE.replace(b"call-1@test", b"poor@test")
        reports = [
            ("good@test", report(block(source=0xA1, jitter=80))),
            ("poor@test", report(block(source=0xB2, fraction=40, lost=120), rtype=200)),
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for sip in (good, bad):
                udp.sendto(hep(sip, ts_sec=now), ("127.0.0.1", server.port))
            for call_id, doc in reports:
                packet = hep(json.dumps(doc).encode(), proto_type=5, ts_sec=now + 5,
                             correlation_id=call_id, capture_host="ast1")  # fmt: skip
                udp.sendto(packet, ("127.0.0.1", server.port))
            # no Call-ID: refused, counted
            udp.sendto(hep(json.dumps(report()).encode(), proto_type=5), ("127.0.0.1", server.port))
        counts = server.settled(5)
        assert (counts["stored"], counts["rejected_no_call_id"]) == (4, 1)

        store = Store(server.db, create=False)
        try:
            poor = store.stream_quality("poor@test")
            fine = store.stream_quality("good@test")
        finally:
            store.close()
        assert [(s.source_ssrc, s.packets_lost, s.fraction_lost) for s in poor] == [
            (0xB2, 120, 40 / 256)
        ]
        assert [(s.source_ssrc, s.jitter_ms) for s in fine] == [(0xA1, 10.0)]
        assert poor[0].mos < 3.5 < fine[0].mos

        out = server.cli("search", "--mos-below", "3.5", "--json")
        assert out.returncode == 0, out.stderr
        assert [c["call_id"] for c in json.loads(out.stdout)] == ["poor@test"]
        out = server.cli("search", "--mos-below", "9")
        assert out.returncode == 2 and "--mos-below" in out.stderr
    finally:
        assert server.stop() == 0


def test_hep_over_tls_on_its_own_listener(tmp_path: Path) -> None:
    """A `tls:` listener takes HEP over TLS (what Asterisk and Kamailio can send
    through a TLS tunnel); a plain-TCP client on it is refused, nothing stored.
    The sender writes and closes at once, never reading: all it sent is
    stored (with TLS 1.3 session tickets left unread, its close was a reset
    that threw away the end of the stream, one run in five)."""
    import ssl

    from tests.integration.tls_certs import TestCa

    ca = TestCa(tmp_path / "ca")
    pair = ca.issue("127.0.0.1", server=True)
    tls_port = free_port()
    server = CaptureServer(
        tmp_path,
        args=[
            "--listen", f"udp:127.0.0.1:{free_port_both()},tls:127.0.0.1:{tls_port}",
            "--tls-cert", str(pair.cert), "--tls-key", str(pair.key),
        ],
    )  # fmt: skip
    server.start()
    try:
        client = ssl.create_default_context(cafile=str(ca.path))
        packets = [
            hep(INVITE.replace(b"call-1@test", f"tls-{i}".encode()), ip_proto=6) for i in range(50)
        ]
        with (
            socket.create_connection(("127.0.0.1", tls_port)) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            tls.sendall(b"".join(packets))
        counts = server.settled(len(packets))
        assert counts["stored"] == 50 and counts["rejected"] == 0
        out = server.cli("search", "--call-id", "tls-7", "--json")
        assert [c["call_id"] for c in json.loads(out.stdout)] == ["tls-7"]
        # Plain HEP on the TLS port is not a TLS handshake: not stored.
        with socket.create_connection(("127.0.0.1", tls_port)) as plain:
            plain.settimeout(10)
            plain.sendall(packets[0])
            with contextlib.suppress(ConnectionResetError):
                plain.recv(100)
        assert server.counts()["stored"] == 50
    finally:
        assert server.stop() == 0
    bad = subprocess.run(
        [sys.executable, "-m", "asterfleet.cli.capture", "run", "--db", str(tmp_path / "x.db"),
         "--listen", f"tls:127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "--tls-cert" in bad.stderr


def udp_burst_is_stored_once(server: CaptureServer) -> None:
    """Send a burst larger than one recvmmsg batch: every datagram stored
    once (the sum over the writers), rejects still counted."""
    server.start()
    try:
        good = [hep(INVITE.replace(b"call-1@test", f"burst-{i}".encode())) for i in range(3000)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i, packet in enumerate(good):
                udp.sendto(packet, ("127.0.0.1", server.port))
                if i % 500 == 0:
                    udp.sendto(b"HEP3garbage", ("127.0.0.1", server.port))
        counts = server.settled(len(good) + 6)
        kernel = server.metrics()["asterfleet_capture_udp_kernel_drops_total"]
        assert counts["stored"] + kernel == 3000 and counts["rejected_bad_length"] == 6
        store = Store(server.db, create=False)
        try:
            with store.engine.connect() as conn:
                distinct = conn.exec_driver_sql(
                    "SELECT count(DISTINCT call_id) FROM sip_messages"
                ).scalar_one()
        finally:
            store.close()
        assert distinct == counts["stored"]  # no message stored twice
    finally:
        assert server.stop() == 0


def test_udp_bursts_are_drained_in_batches(tmp_path: Path) -> None:
    # SQLite: one writer whatever --writers says (it takes one writer at a time).
    udp_burst_is_stored_once(
        CaptureServer(tmp_path, args=["--writers", "3", "--batch-size", "300"])
    )
