#!/usr/bin/env python3
"""Take docs/call-flow.png: a call's ladder page in the console's Calls area.

Writes one call (caller → balancer → Asterisk box, with 100/180/200, ACK and
BYE) into a throwaway capture database through the collector's own path,
starts a console on a free loopback port reading it, logs in with headless
Chromium, opens the call, clicks the 200 OK and saves the screenshot.

    .venv/bin/python scripts/screenshot_calls.py [--out docs/call-flow.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from asterfleet.capture.collector import packet_to_row
from asterfleet.capture.hep import HepPacket, encode_hep
from asterfleet.capture.store import Store
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in

PASSWORD = "screenshot-pass"
CALL_ID = "6a1f0c2e9b7d4e31@203.0.113.10"
CALLER, LB, BOX = ("203.0.113.10", 5060), ("10.0.0.2", 5060), ("10.0.1.21", 5080)
SDP = "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\n"

# (start line, CSeq, src, dst, ms after the INVITE, with SDP from)
FLOW = [
    ("INVITE sip:2001@pbx.example.com SIP/2.0", "1 INVITE", CALLER, LB, 0, CALLER),
    ("SIP/2.0 100 Trying", "1 INVITE", LB, CALLER, 0.4, None),
    ("INVITE sip:2001@10.0.1.21:5080 SIP/2.0", "1 INVITE", LB, BOX, 0.9, CALLER),
    ("SIP/2.0 100 Trying", "1 INVITE", BOX, LB, 2.1, None),
    ("SIP/2.0 180 Ringing", "1 INVITE", BOX, LB, 35.0, None),
    ("SIP/2.0 180 Ringing", "1 INVITE", LB, CALLER, 35.6, None),
    ("SIP/2.0 200 OK", "1 INVITE", BOX, LB, 2410.0, BOX),
    ("SIP/2.0 200 OK", "1 INVITE", LB, CALLER, 2410.7, BOX),
    ("ACK sip:2001@10.0.1.21:5080 SIP/2.0", "1 ACK", CALLER, LB, 2450.2, None),
    ("ACK sip:2001@10.0.1.21:5080 SIP/2.0", "1 ACK", LB, BOX, 2450.8, None),
    ("BYE sip:2001@10.0.1.21:5080 SIP/2.0", "2 BYE", CALLER, LB, 64210.0, None),
    ("BYE sip:2001@10.0.1.21:5080 SIP/2.0", "2 BYE", LB, BOX, 64210.6, None),
    ("SIP/2.0 200 OK", "2 BYE", BOX, LB, 64213.9, None),
    ("SIP/2.0 200 OK", "2 BYE", LB, CALLER, 64214.5, None),
]


def message(start: str, cseq: str, src: tuple[str, int], sdp_from: tuple[str, int] | None) -> bytes:
    body = SDP.format(ip=sdp_from[0]) if sdp_from else ""
    agent = "Asterisk PBX 20.11.0" if src == BOX else "Zoiper rv2.10"
    headers = [
        start,
        f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK-{abs(hash((start, src))) % 10**8}",
        'From: "Alice" <sip:alice@pbx.example.com>;tag=8c41f2',
        "To: <sip:2001@pbx.example.com>" + (";tag=as5e1d0a7b" if start.startswith("SIP") else ""),
        f"Call-ID: {CALL_ID}",
        f"CSeq: {cseq}",
        "Max-Forwards: 69",
        f"User-Agent: {agent}",
    ]
    if body:
        headers.append("Content-Type: application/sdp")
    headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def populate(db: str) -> None:
    store = Store(db)
    t0 = int(time.time() * 1_000_000) - 120_000_000
    rows = []
    for start, cseq, src, dst, ms, sdp in FLOW:
        us = t0 + int(ms * 1000)
        pkt = HepPacket(
            payload=message(start, cseq, src, sdp),
            src_ip=src[0],
            src_port=src[1],
            dst_ip=dst[0],
            dst_port=dst[1],
            ts_sec=us // 1_000_000,
            ts_usec=us % 1_000_000,
            capture_id=1,
            node_name="lb-a",
        )
        rows.append(packet_to_row(encode_hep(pkt), None, us))
    store.insert_rows(rows)
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/call-flow.png"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="af-shot-"))
    console: ManagedProcess | None = None
    try:
        capture_db = str(work / "capture.db")
        populate(capture_db)
        port = free_port()
        exe = shutil.which("asterfleet", path=str(Path(sys.executable).parent)) or "asterfleet"
        console = ManagedProcess(
            "console",
            [exe, "console", "--listen", f"127.0.0.1:{port}", "--etcd",
             f"127.0.0.1:{free_port()}", "--cluster", "lab", "--db", str(work / "console.db"),
             "--capture-db", capture_db],
            work / "console.log",
            env={"ASTERFLEET_ADMIN_PASSWORD": PASSWORD},
        ).start()  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=1).json()["ok"], 30, what="console")
        with sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            sign_in(page, f"{url}/calls", "admin", PASSWORD)
            page.wait_for_url("**/calls")
            page.click("#calls-table td.callid a")
            page.wait_for_selector("svg.ladder")
            page.locator("svg.ladder g.msg").nth(6).click()  # the box's 200 OK
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=False)
            browser.close()
        print(f"wrote {args.out}")
        return 0
    finally:
        if console is not None:
            console.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
