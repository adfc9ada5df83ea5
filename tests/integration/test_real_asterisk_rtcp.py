"""Media quality from a real Asterisk 22 (issue 14.4): a call with RTP both
ways, SIPp through Kamailio to the box's Echo(), and the RTCP reports the
box's ``res_hep_rtcp`` sends to the capture server, stored per call and
stream and shown on the call page and ``GET /api/v1/calls/{id}``.

Run where ``ASTERFLEET_ASTERISK`` names an Asterisk with ``res_hep_rtcp``
built (the fleet's image builds it); skipped otherwise, with the reason.
SIPp sends no RTCP, so what arrives are the box's own reports on SIPp's
stream (sender reports: it sends the echo); without an SR from SIPp there is
no round-trip time (``lsr`` 0)."""

from __future__ import annotations

import re
import socket
import sqlite3
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
#: Asterisk reports every 5 s (rtp.conf rtcpinterval): one report, with room.
HOLD_MS = 7_500
ECHO = """[fleet-dialplan]
exten => asterfleet,1,Answer()
 same => n,Echo()
 same => n,Hangup()
"""


def sdp_audio_port(sip: str) -> int:
    found = re.search(r"^m=audio (\d+) ", sip, re.M)
    assert found, sip
    return int(found.group(1))


def test_a_real_asterisks_rtcp_gives_the_calls_media_quality(tmp_path: Path) -> None:
    require_asterisk()  # before anything starts
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
        media = ["-mp", str(free_port(socket.SOCK_DGRAM)), "-mi", "127.0.0.1"]
        uac = SippUac(
            work, "127.0.0.1", fleet.stack.sip_port, rate=1, hold_ms=HOLD_MS, max_calls=1,
            scenario=SCENARIO, extra_args=media,
        ).start()  # fmt: skip
        try:
            assert uac.wait(timeout=60) == 0, uac.log_tail()
        finally:
            uac.stop()
        assert uac.stats().successful_calls == 1

        web = logged_in(fleet.console.url)

        def ended() -> dict[str, Any] | None:
            calls = web.get("/api/v1/calls", params={"method": "INVITE"}).json()["calls"]
            return calls[0] if calls and calls[0]["state"] == "ended" else None

        call = wait_for(ended, 30, what="the captured call, ended")
        assert isinstance(call, dict)
        call_id = call["call_id"]

        def detail() -> dict[str, Any] | None:
            d: dict[str, Any] = web.get(f"/api/v1/calls/{call_id}").json()
            return d if d["streams"] else None

        shown = wait_for(detail, 20, what="the call's RTCP reports stored")
        assert isinstance(shown, dict)
        # Who streamed where: SIPp's RTP port from its INVITE, the box's from its 200.
        with_sdp = [m for m in shown["messages"] if "m=audio" in m["text"]]
        invite = next(m["text"] for m in with_sdp if m["method"] == "INVITE")
        answer = next(m["text"] for m in with_sdp if m["status"] == 200)
        caller_rtp, box_rtp = sdp_audio_port(invite), sdp_audio_port(answer)

        # What the store holds: the box's reports (res_hep_rtcp, capture name
        # ast-real), sent from its RTCP port to SIPp's, each on SIPp's stream.
        with sqlite3.connect(fleet.capture.db) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM rtcp_reports WHERE call_id = ? ORDER BY ts_us", (call_id,)
            ).fetchall()
        print("RTCP reports of the real Asterisk's call:", [dict(r) for r in rows])
        assert rows, "no RTCP report stored"
        assert {r["capture_host"] for r in rows} == {"ast-real"}
        assert {(r["src_port"], r["dst_port"]) for r in rows} == {(box_rtp + 1, caller_rtp + 1)}
        # Sender reports (the box sends the echo), about one stream: SIPp's.
        assert {r["report_type"] for r in rows} == {200}
        assert len({r["ssrc"] for r in rows}) == len({r["source_ssrc"] for r in rows}) == 1
        assert rows[0]["ssrc"] != rows[0]["source_ssrc"]
        start, end = call["start_us"], call["start_us"] + call["duration_s"] * 1e6
        for r in rows:
            assert start < r["ts_us"] <= end + 1e6  # during the call
            # Loopback: nothing lost, little jitter, no SR from SIPp so no RTT.
            assert (r["fraction_lost"], r["packets_lost"], r["rtt_ms"]) == (0.0, 0, None)
            assert 0.0 <= r["jitter_ms"] < 100.0
            assert r["mos"] == round(mos_from_r(r_factor(0.0, r["jitter_ms"], None)), 2)
            assert 4.0 <= r["mos"] <= 4.41  # G.711 with no loss: "good" to the best it gets

        # The API and the call page show that stream.
        (stream,) = shown["streams"]
        last = rows[-1]
        assert stream == {
            "source_ssrc": last["source_ssrc"],
            "reporter": f"{last['src_ip']}:{last['src_port']}",
            "reports": len(rows),
            "fraction_lost": 0.0,
            "packets_lost": 0,
            "jitter_ms": last["jitter_ms"],
            "rtt_ms": None,
            "mos": last["mos"],
            "min_mos": min(r["mos"] for r in rows),
        }
        page = web.get(f"/calls/{call_id}").text
        assert 'id="streams"' in page and "No RTCP reports" not in page
        assert f"0x{last['source_ssrc']:08x}" in page and f"{last['mos']:.2f}" in page
        # Searchable by MOS: below 4.5 finds it, below 3.5 does not.
        for below, listed in (("4.5", True), ("3.5", False)):
            found = web.get("/api/v1/calls", params={"mos_below": below}).json()["calls"]
            assert (call_id in [c["call_id"] for c in found]) is listed, below
        # None of the box's reports was refused by the collector.
        assert fleet.capture.counts().get("rejected_bad_rtcp", 0) == 0
