"""Media quality from a real Asterisk 22 (issue 14.4): a call with RTP both
ways, SIPp through Kamailio to the box's Echo(), and the RTCP reports the
box's ``res_hep_rtcp`` sends to the capture server, stored per call and
stream and shown on the call page and ``GET /api/v1/calls/{id}``.

Run where ``ASTERFLEET_ASTERISK`` names an Asterisk with ``res_hep_rtcp``
built (the fleet's image builds it); skipped otherwise, with the reason.
SIPp sends no RTCP: a small RTCP peer on SIPp's RTCP port answers the box's
sender reports, the first with a sender report of its own, the others with
receiver reports (both carrying a block on the box's stream), so the box
also sends the reports it received, of both kinds, with a round-trip time.
And the box's next sender report answers the peer's (its ``lsr`` is the
peer's clock): a report the box *sent*, whose ``A - LSR - DLSR`` is no
round-trip time; the capture must show none for it."""

from __future__ import annotations

import contextlib
import re
import socket
import sqlite3
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from asterfleet.capture.rtcp import mos_from_r, r_factor
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import wait_for
from asterfleet.sipp.runner import SippUac
from tests.integration.test_capture_fleet import fleet_with_capture, logged_in, real_node
from tests.integration.test_real_asterisk import BALANCER, require_asterisk, running_box

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).parent / "scenarios" / "uac_rtp.xml"
#: Asterisk reports every 5 s (rtp.conf rtcpinterval): two reports, with room
#: (the second answers the peer's SR).
HOLD_MS = 12_500
ECHO = """[fleet-dialplan]
exten => asterfleet,1,Answer()
 same => n,Echo()
 same => n,Hangup()
"""


class RtcpPeer:
    """SIPp's RTCP side, which SIPp lacks: on SIPp's RTCP port (its RTP port
    + 1), it answers each sender report of the box (RFC 3550 6.4) -- the
    first with a sender report, later ones with receiver reports -- with a
    block on the box's stream: LSR from that SR, DLSR the time it held it,
    so the box's res_hep_rtcp sends reports it *received*, with a round-trip
    time to tell. It keeps the LSR of each of the box's SRs: non-zero once
    the box answers the peer's SR."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):  # an even RTP port whose RTCP port (+1) is ours
            rtp = free_port(socket.SOCK_DGRAM) & ~1
            with contextlib.suppress(OSError):
                self.sock.bind(("127.0.0.1", rtp + 1))
                break
        else:
            raise RuntimeError("no free RTP/RTCP port pair on 127.0.0.1")
        self.rtp_port = rtp
        self.sock.settimeout(0.2)
        self.answered = 0
        self.box_lsrs: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, box = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            held = time.time()
            if len(data) < 52 or data[1] != 200 or data[0] & 0x1F < 1:
                continue  # not an SR with a report block
            box_ssrc, ntp_sec, ntp_frac = struct.unpack_from("!III", data, 4)
            (our_ssrc,) = struct.unpack_from("!I", data, 28)  # the SR's block: our stream
            self.box_lsrs.append(struct.unpack_from("!I", data, 44)[0])
            lsr = ((ntp_sec & 0xFFFF) << 16) | (ntp_frac >> 16)
            now = time.time()
            block = struct.pack("!IIIIII", box_ssrc, 0, 1000, 0, lsr, int((now - held) * 65536))
            if self.answered == 0:  # an SR: NTP now, RTP time, packets, octets
                head = struct.pack("!BBHI", 0x81, 200, 12, our_ssrc) + struct.pack(
                    "!IIIII", int(now) + 2_208_988_800, int(now % 1 * 2**32), 0, 0, 0
                )
            else:
                head = struct.pack("!BBHI", 0x81, 201, 7, our_ssrc)
            self.sock.sendto(head + block, box)
            self.answered += 1

    def __enter__(self) -> RtcpPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def sdp_audio_port(sip: str) -> int:
    found = re.search(r"^m=audio (\d+) ", sip, re.M)
    assert found, sip
    return int(found.group(1))


def test_a_real_asterisks_rtcp_gives_the_calls_media_quality(tmp_path: Path) -> None:
    prefix = require_asterisk()  # before anything starts
    if not (prefix / "lib" / "asterisk" / "modules" / "res_hep_rtcp.so").is_file():
        pytest.skip(f"ASTERFLEET_ASTERISK={prefix} has no res_hep_rtcp.so (built without it)")
    with (
        fleet_with_capture(tmp_path) as fleet,
        running_box(
            tmp_path, (BALANCER,), capture=f"127.0.0.1:{fleet.capture.port}", dialplan=ECHO
        ) as asterisk,
        real_node(fleet, asterisk, tmp_path),
    ):
        assert "res_hep_rtcp.so" in asterisk.cli("module show like hep_rtcp")
        work = tmp_path / "caller"
        work.mkdir()
        (work / "audio.ulaw").write_bytes(b"\xff" * 8000)  # 1 s of u-law silence, looped
        with RtcpPeer() as peer:
            media = ["-mp", str(peer.rtp_port), "-mi", "127.0.0.1"]
            uac = SippUac(
                work, "127.0.0.1", fleet.stack.sip_port, rate=1, hold_ms=HOLD_MS, max_calls=1,
                scenario=SCENARIO, extra_args=media,
            ).start()  # fmt: skip
            try:
                assert uac.wait(timeout=60) == 0, uac.log_tail()
            finally:
                uac.stop()
        assert uac.stats().successful_calls == 1
        assert peer.answered >= 1, "the box sent no sender report to SIPp's RTCP port"

        web = logged_in(fleet.console.url)

        def ended() -> dict[str, Any] | None:
            calls = web.get("/api/v1/calls", params={"method": "INVITE"}).json()["calls"]
            return calls[0] if calls and calls[0]["state"] == "ended" else None

        call = wait_for(ended, 30, what="the captured call, ended")
        assert isinstance(call, dict)
        call_id = call["call_id"]

        def detail() -> dict[str, Any] | None:
            d: dict[str, Any] = web.get(f"/api/v1/calls/{call_id}").json()
            return d if len(d["streams"]) == 2 else None

        shown = wait_for(detail, 20, what="the call's RTCP reports, both streams, stored")
        assert isinstance(shown, dict)
        # Who streamed where: SIPp's RTP port from its INVITE, the box's from its 200.
        with_sdp = [m for m in shown["messages"] if "m=audio" in m["text"]]
        invite = next(m["text"] for m in with_sdp if m["method"] == "INVITE")
        answer = next(m["text"] for m in with_sdp if m["status"] == 200)
        caller_rtp, box_rtp = sdp_audio_port(invite), sdp_audio_port(answer)

        # What the store holds: the box's reports (res_hep_rtcp, capture name
        # ast-real), the ones it sent and the ones it received.
        def clocked() -> list[sqlite3.Row] | None:
            with sqlite3.connect(fleet.capture.db) as db:
                db.row_factory = sqlite3.Row
                found = db.execute(
                    "SELECT * FROM rtcp_reports WHERE call_id = ? ORDER BY ts_us", (call_id,)
                ).fetchall()
            return found if all(r["clock_hz"] is not None for r in found) else None

        # Each report's RTP clock, decided by the collector from the box's
        # SDP answer (PCMU) when it stored it, or by its pass soon after.
        rows = wait_for(clocked, 10, what="the RTP clock of every report decided")
        assert isinstance(rows, list)
        assert {r["clock_hz"] for r in rows} == {8000}
        print("RTCP reports of the real Asterisk's call:", [dict(r) for r in rows])
        assert {r["capture_host"] for r in rows} == {"ast-real"}
        # Which way each went, as the test knows it: the box's RTCP port is
        # its RTP port + 1, SIPp's (the peer's) likewise.
        sent = [r for r in rows if r["src_port"] == box_rtp + 1]
        received = [r for r in rows if r["src_port"] == caller_rtp + 1]
        assert sent and received and len(sent) + len(received) == len(rows)
        # Sent: sender reports (the box sends the echo) to SIPp's RTCP port,
        # on SIPp's stream: no RTT, neither before the peer's SR (lsr 0) nor
        # after it, when the box's SR answers the peer's (lsr in the peer's
        # clock: what the capture used to show as an RTT).
        assert peer.box_lsrs[0] == 0 and any(peer.box_lsrs[1:]), peer.box_lsrs
        box_ssrc, caller_ssrc = sent[0]["ssrc"], sent[0]["source_ssrc"]
        assert box_ssrc != caller_ssrc
        for r in sent:
            assert (r["dst_port"], r["report_type"]) == (caller_rtp + 1, 200)
            assert (r["ssrc"], r["source_ssrc"], r["rtt_ms"]) == (box_ssrc, caller_ssrc, None)
        # Received: the peer's SR, then RRs, on the box's stream, from
        # SIPp's RTCP port (the reporter), with the round trip the box's
        # clock tells (loopback: milliseconds; a loaded machine: a few more).
        assert {r["report_type"] for r in received} == {200, 201}
        for r in received:
            assert r["dst_port"] == box_rtp + 1
            assert r["source_ssrc"] == box_ssrc
            assert r["rtt_ms"] is not None and 0.0 <= r["rtt_ms"] < 500.0
        start, end = call["start_us"], call["start_us"] + call["duration_s"] * 1e6
        for r in rows:
            assert start < r["ts_us"] <= end + 1e6  # during the call
            # Loopback: nothing lost, little jitter.
            assert (r["fraction_lost"], r["packets_lost"]) == (0.0, 0)
            assert 0.0 <= r["jitter_ms"] < 100.0
            assert r["mos"] == round(mos_from_r(r_factor(0.0, r["jitter_ms"], r["rtt_ms"])), 2)
            assert 4.0 <= r["mos"] <= 4.41  # G.711 with no loss: "good" to the best it gets

        # The API and the call page show both streams (latest report each).
        by_stream: dict[tuple[int, str], list[sqlite3.Row]] = {}
        for r in rows:
            by_stream.setdefault((r["source_ssrc"], f"{r['src_ip']}:{r['src_port']}"), []).append(r)
        assert {s["source_ssrc"] for s in shown["streams"]} == {box_ssrc, caller_ssrc}
        assert sorted(
            (s["source_ssrc"], s["reporter"], s["reports"], s["packets_lost"], s["jitter_ms"],
             s["rtt_ms"], s["mos"], s["min_mos"])
            for s in shown["streams"]
        ) == sorted(
            (ssrc, reporter, len(of), of[-1]["packets_lost"], of[-1]["jitter_ms"],
             of[-1]["rtt_ms"], of[-1]["mos"], min(r["mos"] for r in of))
            for (ssrc, reporter), of in by_stream.items()
        )  # fmt: skip
        page = web.get(f"/calls/{call_id}").text
        assert 'id="streams"' in page and "No RTCP reports" not in page
        streams = page[
            page.index('id="streams"') : page.index("</table>", page.index('id="streams"'))
        ]
        assert f"0x{box_ssrc:08x}" in streams and f"0x{caller_ssrc:08x}" in streams
        assert f"{received[-1]['rtt_ms']:.1f} ms" in streams
        # Jitter read at the clock of the codec the box answered with (PCMU).
        assert shown["media"] == {"clock_hz": 8000, "codec": "PCMU", "from_sdp": True}
        assert "PCMU RTP clock, 8000 Hz (from the SDP)" in " ".join(page.split())
        # Searchable by MOS: below 4.5 finds it, below 3.5 does not.
        for below, listed in (("4.5", True), ("3.5", False)):
            found = web.get("/api/v1/calls", params={"mos_below": below}).json()["calls"]
            assert (call_id in [c["call_id"] for c in found]) is listed, below
        # None of the box's reports was refused by the collector.
        assert fleet.capture.counts().get("rejected_bad_rtcp", 0) == 0
