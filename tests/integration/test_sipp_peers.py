"""Real SIPp peers: the UAS answers probes and calls, the UAC places calls,
statistics are read from SIPp's own CSV."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.node.calls import SippStatCounter
from asterfleet.runtime.process import wait_for
from asterfleet.sip.options import probe
from asterfleet.sipp.runner import SippUac, SippUas

pytestmark = pytest.mark.integration


@pytest.fixture
def uas(tmp_path: Path) -> Iterator[SippUas]:
    peer = SippUas(tmp_path / "uas", name="uas")
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def uas_503(tmp_path: Path) -> Iterator[SippUas]:
    peer = SippUas(tmp_path / "uas503", scenario="uas_503.xml", name="uas503")
    try:
        peer.start()
        yield peer
    finally:
        peer.stop()


def test_uas_answers_options_probe(uas: SippUas) -> None:
    result = asyncio.run(probe("127.0.0.1", uas.port, "udp", timeout=2.0))
    assert result.status == 200, result
    assert result.rtt_ms is not None and 0 < result.rtt_ms < 1000


def test_uas_over_tcp_answers_probe(tmp_path: Path) -> None:
    peer = SippUas(tmp_path, transport="tcp", name="uas-tcp")
    try:
        peer.start()
        result = asyncio.run(probe("127.0.0.1", peer.port, "tcp", timeout=2.0))
        assert result.status == 200, result
    finally:
        peer.stop()


def test_uas_503_answers_probe_with_503(uas_503: SippUas) -> None:
    result = asyncio.run(probe("127.0.0.1", uas_503.port, "udp", timeout=2.0))
    assert result.status == 503, result
    assert result.error is None


def test_uac_calls_uas(uas: SippUas, tmp_path: Path) -> None:
    counter = SippStatCounter(uas.stat_path)
    uac = SippUac(
        tmp_path / "uac", "127.0.0.1", uas.port, rate=10, hold_ms=1000, max_calls=20, name="uac"
    )
    try:
        uac.start()
        peak = 0
        probes_during_calls: list[int | None] = []
        deadline = time.monotonic() + 30
        while uac.alive() and time.monotonic() < deadline:
            current = asyncio.run(counter.active_calls()) or 0
            peak = max(peak, current)
            if current > 0:
                # The balancer probes every second, also while calls are up.
                result = asyncio.run(probe("127.0.0.1", uas.port, "udp", timeout=1.0))
                probes_during_calls.append(result.status)
            time.sleep(0.2)
        assert uac.wait(timeout=5) == 0, uac.log_tail()
        stats = uac.stats()
    finally:
        uac.stop()

    assert stats.successful_calls == 20, stats
    assert stats.failed_calls == 0, stats
    assert stats.total_calls_created == 20
    assert stats.current_calls == 0
    assert peak > 0, "UAS never reported a call in progress"
    assert probes_during_calls and set(probes_during_calls) == {200}
    # The UAS sees every call end.
    wait_for(
        lambda: asyncio.run(counter.active_calls()) == 0,
        timeout=5,
        what="UAS current calls back to 0",
    )


LATE_PROVISIONAL = Path(__file__).parent / "scenarios" / "uas_late_provisional.xml"


@pytest.mark.parametrize("hold_ms", [0, 300])
def test_uac_keeps_answered_calls_when_provisionals_arrive_late(
    tmp_path: Path, hold_ms: int
) -> None:
    # A 180 relayed behind its 200 (or a 100 for a retransmitted INVITE)
    # reaches the caller during the hold (300 ms) or during its BYE (0 ms).
    box = SippUas(tmp_path / "late", scenario=LATE_PROVISIONAL, name="late")
    box.start()
    uac = SippUac(
        tmp_path / "uac", "127.0.0.1", box.port, rate=50, hold_ms=hold_ms, max_calls=50, name="uac"
    )
    try:
        uac.start()
        assert uac.wait(timeout=60) == 0, uac.log_tail()
        stats = uac.stats()
        counts = uac.message_counts()
    finally:
        uac.stop()
        box.stop()
    assert stats.successful_calls == 50 and stats.failed_calls == 0, stats
    # The late ones really came, after the answer.
    assert counts["2_180_Recv"] == 50 and counts["1_100_Recv"] == 50, counts
    assert counts["4_200_Recv"] == 50, counts


def test_uac_graceful_stop_lets_calls_finish(uas: SippUas, tmp_path: Path) -> None:
    uac = SippUac(tmp_path / "uac", "127.0.0.1", uas.port, rate=20, hold_ms=2000, name="uac")
    try:
        uac.start()
        wait_for(lambda: uac.stats().current_calls >= 10, timeout=10, what="calls in progress")
        started = time.monotonic()
        stats = uac.stop_gracefully(timeout=15)
        waited = time.monotonic() - started
    finally:
        uac.stop()
    assert uac.returncode == 0
    assert stats.current_calls == 0
    assert stats.failed_calls == 0, stats
    assert stats.successful_calls == stats.total_calls_created >= 10
    # Calls in progress were held to their end, not cut.
    assert 0.5 < waited < 10


def test_in_dialog_options_do_not_break_calls(uas: SippUas) -> None:
    """An OPTIONS inside a dialog (same Call-ID), before and after the ACK,
    is answered 200 (SIPp's -aa) and the call still ends normally."""
    call_id = f"{secrets.token_hex(8)}@test"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2.0)
        local_port = s.getsockname()[1]
        target = ("127.0.0.1", uas.port)

        def request(method: str, cseq: int, to_tag: str, branch: str) -> bytes:
            return (
                f"{method} sip:uas@127.0.0.1:{uas.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{branch}\r\n"
                "From: <sip:test@127.0.0.1>;tag=caller1\r\n"
                f"To: <sip:uas@127.0.0.1>{to_tag}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:test@127.0.0.1:{local_port}>\r\n"
                "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()

        def final_for(method: str) -> str:
            while True:
                text = s.recv(65535).decode()
                status = int(text.split(" ", 2)[1])
                if status >= 200 and f" {method}\r\n" in text:
                    return text

        s.sendto(request("INVITE", 1, "", "inv"), target)
        answer = final_for("INVITE")
        assert answer.startswith("SIP/2.0 200")
        to_line = next(line for line in answer.split("\r\n") if line.startswith("To:"))
        to_tag = ";tag=" + to_line.split("tag=", 1)[1]
        s.sendto(request("OPTIONS", 2, to_tag, "opt1"), target)
        assert final_for("OPTIONS").startswith("SIP/2.0 200")
        s.sendto(request("ACK", 1, to_tag, "ack"), target)
        s.sendto(request("OPTIONS", 3, to_tag, "opt2"), target)
        assert final_for("OPTIONS").startswith("SIP/2.0 200")
        s.sendto(request("BYE", 4, to_tag, "bye"), target)
        assert final_for("BYE").startswith("SIP/2.0 200")

    wait_for(
        lambda: uas.stats().successful_calls >= 1 and uas.stats().current_calls == 0,
        timeout=5,
        what="the call to end successfully",
    )
    stats = uas.stats()
    assert stats.failed_calls == 0, stats
    assert stats.auto_answered >= 2
