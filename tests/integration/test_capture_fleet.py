"""Real Kamailio, SIPp, etcd, agents, the capture server and the console:
a call's ladder names its hosts after the fleet (caller, lb1, ast1), draws
one arrow per message, and shows the drain of its node while it lasted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from asterfleet.console.process import start_console
from asterfleet.fleet.directory import sip_hostport
from asterfleet.lab.stack import Stack, StackOptions
from asterfleet.runtime.process import wait_for
from tests.integration.test_capture_collector import CaptureServer

pytestmark = pytest.mark.integration

CLUSTER = "callview"
PASSWORD = "callview-admin-pass"
HOLD_MS = 10_000  # long enough for the drain to land inside the call on a loaded machine


def logged_in(url: str) -> httpx.Client:
    web = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
    csrf = re.search(r'name="csrf_token" value="([^"]*)"', web.get("/login").text)
    assert csrf
    r = web.post(
        "/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf.group(1)}
    )
    assert r.status_code == 303, r.text
    return web


def test_a_calls_ladder_names_the_fleet_and_shows_the_drain_of_its_node(tmp_path: Path) -> None:
    capture = CaptureServer(tmp_path / "capture")
    stack = Stack(tmp_path / "stack", StackOptions(cluster=CLUSTER, capture_id=11))
    console = None
    try:
        capture.start()
        stack.options.capture = f"127.0.0.1:{capture.port}"
        stack.start()
        console = start_console(
            tmp_path / "console.log",
            etcd=stack.etcd_endpoint,
            cluster=CLUSTER,
            db=str(tmp_path / "console.db"),
            extra_args=["--capture-db", capture.db],
            env={"ASTERFLEET_ADMIN_PASSWORD": PASSWORD},
            timeout=120,
        )
        node = stack.add_node("ast1")
        stack.wait_routable(node)
        web = logged_in(console.url)
        # The console has seen the node (its address) before the call starts.
        wait_for(lambda: "ast1" in web.get("/events").text, 30, what="the console sees ast1")

        uac = stack.start_calls(rate=1, hold_ms=HOLD_MS, max_calls=1)
        wait_for(lambda: node.uas.stats().current_calls > 0, 30, what="the call on ast1")

        def fleet_cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "asterfleet", "fleet", *args,
                 "--etcd", stack.etcd_endpoint, "--cluster", CLUSTER],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        def calls_reported() -> bool:
            listed = json.loads(fleet_cli("ls", "--json").stdout)["nodes"]
            return any(n["id"] == "ast1" and (n["active_calls"] or 0) > 0 for n in listed)

        # The agent has counted the call (else the drain reads "drained" at once).
        wait_for(calls_reported, 30, what="ast1's agent reports the call")
        drained = fleet_cli("drain", "ast1", "--by", "olga@cli")
        assert drained.returncode == 0, drained.stderr
        assert uac.wait(timeout=60) == 0, uac.log_tail()

        def ended() -> dict[str, object] | None:
            calls = web.get("/api/v1/calls", params={"method": "INVITE"}).json()["calls"]
            return calls[0] if calls and calls[0]["state"] == "ended" else None

        call = wait_for(ended, 30, what="the captured call, ended")
        assert isinstance(call, dict)
        detail = web.get(f"/api/v1/calls/{call['call_id']}").json()
        fleet = detail["fleet"]
        lb = f"127.0.0.1:{stack.sip_port}"
        box = sip_hostport(node.sip_uri)
        caller = next(m["src"] for m in detail["messages"] if m["method"] == "INVITE")
        assert fleet["names"] == {caller: "caller", lb: "lb1", box: "ast1"}
        assert fleet["node_name"] == "ast1"
        assert fleet["node_state"]["state"] == "active"  # when the call started
        # The operator's drain, by name, while the call lasted (its kind is
        # "draining", or "drained" if the agent's call count lagged).
        drain = [e for e in fleet["events"] if e["actor"] == "olga@cli"]
        assert [(e["node"], e["kind"][:5]) for e in drain] == [("ast1", "drain")], fleet["events"]
        assert call["start_us"] / 1e6 < drain[0]["at"] < (call["start_us"] / 1e6) + HOLD_MS / 1000

        html = web.get(f"/calls/{call['call_id']}").text
        ladder = html[html.index("<svg") : html.index("</svg>")]
        for name in ("caller", "lb1", "ast1"):
            assert f">{name}</text>" in ladder
        # One arrow per SIP message: Kamailio captured each hop once, and
        # every arrow is a different message (hop, CSeq, method or status).
        arrows = re.findall(r'<g class="msg" data-message-id="(\d+)">', ladder)
        assert len(arrows) == call["messages"] == len(detail["messages"]) - call["duplicates"]
        keys = [
            (m["src"], m["dst"], m["cseq"], m["method"] or m["status"]) for m in detail["messages"]
        ]
        assert len(set(keys)) == len(keys) == len(arrows)
        # The drain is drawn across the ladder, after the INVITE, before the BYE.
        note = ladder.index(f"{drain[0]['message']} (by olga@cli)")
        assert ladder.index(">INVITE<") < note < ladder.index(">BYE<")
        assert 'id="node-state"' in html and 'href="/fleet/nodes/ast1"' in html
        # The node's page lists the call among its recent calls.
        href = "/calls/" + quote(str(call["call_id"]))
        assert f'href="{href}"' in web.get("/fleet/nodes/ast1").text
    finally:
        if console is not None:
            console.stop()
        stack.stop()
        capture.stop()
