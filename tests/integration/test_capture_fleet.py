"""Real Kamailio, SIPp, etcd, agents, the capture server and the console:
a call's ladder names its hosts after the fleet (caller, lb1, ast1), draws
one arrow per message, and shows the drain of its node while it lasted.

Twice: with a SIPp box (Kamailio alone sends HEP), and, where
``ASTERFLEET_ASTERISK`` names one, with a real Asterisk 22 that sends HEP
itself (res_hep_pjsip): then the balancer-to-box hop is captured by both
ends and each of its messages must still be one arrow, in causal order."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from asterfleet.console.process import RunningConsole, start_console
from asterfleet.fleet.directory import sip_hostport
from asterfleet.lab.stack import Stack, StackOptions, agent_argv
from asterfleet.runtime.process import ManagedProcess, wait_for
from tests.integration.test_capture_collector import CaptureServer
from tests.integration.test_real_asterisk import (
    AGENT,
    BALANCER,
    BOX,
    SECRET,
    Box,
    require_asterisk,
    running_box,
)

pytestmark = pytest.mark.integration

CLUSTER = "callview"
PASSWORD = "callview-admin-pass"
HOLD_MS = 10_000  # long enough for the drain to land inside the call on a loaded machine
CAPTURE_ID = 11  # Kamailio's HEP capture id, published by lb1


def logged_in(url: str, password: str = PASSWORD) -> httpx.Client:
    """A client signed in to the console at ``url`` as its admin."""
    web = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
    csrf = re.search(r'name="csrf_token" value="([^"]*)"', web.get("/login").text)
    assert csrf
    r = web.post(
        "/login", data={"username": "admin", "password": password, "csrf_token": csrf.group(1)}
    )
    assert r.status_code == 303, r.text
    return web


@dataclass
class Fleet:
    stack: Stack
    capture: CaptureServer
    console: RunningConsole


@contextlib.contextmanager
def fleet_with_capture(tmp_path: Path) -> Iterator[Fleet]:
    """etcd, Kamailio and lb1 sending HEP to a capture server, and a console on both."""
    capture = CaptureServer(tmp_path / "capture")
    stack = Stack(tmp_path / "stack", StackOptions(cluster=CLUSTER, capture_id=CAPTURE_ID))
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
        yield Fleet(stack, capture, console)
    finally:
        if console is not None:
            console.stop()
        stack.stop()
        capture.stop()


@contextlib.contextmanager
def real_node(fleet: Fleet, asterisk: Box, tmp_path: Path) -> Iterator[ManagedProcess]:
    """A node agent registering the real Asterisk as ``ast1`` (counting its
    calls over AMI), until Kamailio routes to it."""
    stack = fleet.stack
    uri = f"sip:{BOX}:{asterisk.sip_port};transport=udp"
    agent = ManagedProcess(
        "node-ast1",
        agent_argv(
            "node", "run", "--etcd", stack.etcd_endpoint, "--cluster", CLUSTER,
            "--id", "ast1", "--sip-uri", uri,
            "--calls", f"ami://asterfleet@{AGENT}:{asterisk.ami_port}",
        ),
        tmp_path / "agent.log",
        env={"ASTERFLEET_AMI_SECRET": SECRET},
    ).start()  # fmt: skip
    try:

        def ok() -> bool:
            d = stack.dispatcher_by_uri().get(uri)
            return d is not None and d.flags.startswith("A")

        wait_for(ok, 60, what="the real box routable in Kamailio")
        yield agent
    finally:
        agent.stop()


def drained_call(fleet: Fleet, node_id: str) -> tuple[httpx.Client, dict[str, Any]]:
    """One call through lb1 to ``node_id``, drained by olga while it is up;
    the console's client and the ended call's summary."""
    stack = fleet.stack
    web = logged_in(fleet.console.url)
    # The console has seen the node (its address) before the call starts.
    wait_for(lambda: node_id in web.get("/events").text, 30, what=f"the console sees {node_id}")

    def fleet_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "asterfleet", "fleet", *args,
             "--etcd", stack.etcd_endpoint, "--cluster", CLUSTER],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def calls_reported() -> bool:
        listed = json.loads(fleet_cli("ls", "--json").stdout)["nodes"]
        return any(n["id"] == node_id and (n["active_calls"] or 0) > 0 for n in listed)

    uac = stack.start_calls(rate=1, hold_ms=HOLD_MS, max_calls=1)
    # The agent has counted the call (else the drain reads "drained" at once).
    wait_for(calls_reported, 30, what=f"{node_id}'s agent reports the call")
    drained = fleet_cli("drain", node_id, "--by", "olga@cli")
    assert drained.returncode == 0, drained.stderr
    assert uac.wait(timeout=60) == 0, uac.log_tail()
    assert uac.stats().successful_calls == 1

    def ended() -> dict[str, Any] | None:
        calls = web.get("/api/v1/calls", params={"method": "INVITE"}).json()["calls"]
        return calls[0] if calls and calls[0]["state"] == "ended" else None

    call = wait_for(ended, 30, what="the captured call, ended")
    assert isinstance(call, dict)
    return web, call


def check_ladder(
    web: httpx.Client, call: dict[str, Any], lb: str, box: str, node_id: str
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """What an operator checks on the call's page: the columns named after the
    fleet, one arrow per SIP message, the node's drain on the time axis.
    The names and the ladder's messages (API ``flow``, in the ladder's order)."""
    detail: dict[str, Any] = web.get(f"/api/v1/calls/{call['call_id']}").json()
    fleet = detail["fleet"]
    # The caller: who sent the balancer its INVITE. (Not the first INVITE by
    # time: Asterisk stamps what it receives to the millisecond, so its copy
    # of the forwarded INVITE can read earlier than the caller's.)
    caller = next(
        m["src"] for m in detail["messages"] if m["method"] == "INVITE" and m["dst"] == lb
    )
    assert fleet["names"] == {caller: "caller", lb: "lb1", box: node_id}
    assert fleet["node_name"] == node_id
    assert fleet["node_state"]["state"] == "active"  # when the call started
    # The operator's drain, by name, while the call lasted (its kind is
    # "draining", or "drained" if the agent's call count lagged).
    drain = [e for e in fleet["events"] if e["actor"] == "olga@cli"]
    assert [(e["node"], e["kind"][:5]) for e in drain] == [(node_id, "drain")], fleet["events"]
    assert call["start_us"] / 1e6 < drain[0]["at"] < (call["start_us"] / 1e6) + HOLD_MS / 1000

    html = web.get(f"/calls/{call['call_id']}").text
    ladder = html[html.index("<svg") : html.index("</svg>")]
    for name in ("caller", "lb1", node_id):
        assert f">{name}</text>" in ladder
    # One arrow per SIP message: every arrow is a different message (hop,
    # CSeq, method or status), however many capture hosts saw it, and every
    # capture is on one arrow.
    flow: list[dict[str, Any]] = detail["flow"]
    arrows = [int(i) for i in re.findall(r'<g class="msg" data-message-id="(\d+)">', ladder)]
    assert arrows == [f["id"] for f in flow]
    assert len(arrows) == call["messages"] == len(detail["messages"]) - call["duplicates"]
    assert sorted(c for f in flow for c in f["copies"]) == sorted(
        m["id"] for m in detail["messages"]
    )
    keys = [(f["src"], f["dst"], f["cseq"], f["label"]) for f in flow]
    assert len(set(keys)) == len(keys), keys
    assert {a for f in flow for a in (f["src"], f["dst"])} == {caller, lb, box}
    # The drain is drawn across the ladder, after the INVITE, before the BYE.
    note = ladder.index(f"{drain[0]['message']} (by olga@cli)")
    assert ladder.index(">INVITE<") < note < ladder.index(">BYE<")
    assert 'id="node-state"' in html and f'href="/fleet/nodes/{node_id}"' in html
    # The node's page lists the call among its recent calls.
    href = "/calls/" + quote(str(call["call_id"]))
    assert f'href="{href}"' in web.get(f"/fleet/nodes/{node_id}").text
    return fleet["names"], flow


def hops(flow: list[dict[str, Any]], names: dict[str, str]) -> list[tuple[str, str, str]]:
    """The ladder as an operator reads it: (from, to, method or status)."""
    return [(names[f["src"]], names[f["dst"]], f["label"].split(" ")[0]) for f in flow]


def test_a_calls_ladder_names_the_fleet_and_shows_the_drain_of_its_node(tmp_path: Path) -> None:
    with fleet_with_capture(tmp_path) as fleet:
        node = fleet.stack.add_node("ast1")
        fleet.stack.wait_routable(node)
        web, call = drained_call(fleet, "ast1")
        lb = f"127.0.0.1:{fleet.stack.sip_port}"
        check_ladder(web, call, lb, sip_hostport(node.sip_uri), "ast1")
        # Kamailio alone sends HEP here: it captured each hop once.
        assert call["duplicates"] == 0 and call["capture_hosts"] == [str(CAPTURE_ID)]


def test_a_real_asterisks_call_is_one_ladder_with_the_fleets_names(tmp_path: Path) -> None:
    require_asterisk()  # before anything starts
    with (
        fleet_with_capture(tmp_path) as fleet,
        running_box(tmp_path, (BALANCER,), capture=f"127.0.0.1:{fleet.capture.port}") as asterisk,
        real_node(fleet, asterisk, tmp_path),
    ):
        stack = fleet.stack
        web, call = drained_call(fleet, "ast1")
        lb = f"127.0.0.1:{stack.sip_port}"
        box = f"{BOX}:{asterisk.sip_port}"
        names, flow = check_ladder(web, call, lb, box, "ast1")
        # Both ends sent HEP: Kamailio (capture id 11) and Asterisk (its
        # capture name), and what both saw on the lb1-ast1 hop is one arrow.
        assert sorted(call["capture_hosts"]) == sorted([str(CAPTURE_ID), "ast-real"])
        ladder = hops(flow, names)
        print("ladder of the real Asterisk's call:", ladder)
        for f, hop in zip(flow, ladder, strict=True):
            inner = "ast1" in hop[:2]
            want = {str(CAPTURE_ID), "ast-real"} if inner else {str(CAPTURE_ID)}
            assert set(f["capture_hosts"]) == want, (hop, f)
            assert len(f["copies"]) == len(want), (hop, f)
        assert call["duplicates"] == sum(1 for hop in ladder if "ast1" in hop[:2]) > 0
        # Causal order, although Asterisk stamps what it receives to the
        # millisecond only: each hop of the INVITE and of the BYE in turn.
        for chain in (
            [("caller", "lb1", "INVITE"), ("lb1", "ast1", "INVITE"), ("ast1", "lb1", "200"),
             ("lb1", "caller", "200"), ("caller", "lb1", "ACK"), ("lb1", "ast1", "ACK")],
            [("caller", "lb1", "BYE"), ("lb1", "ast1", "BYE"), ("ast1", "lb1", "200"),
             ("lb1", "caller", "200")],
        ):  # fmt: skip
            number = next(
                f["cseq"].split()[0] for h, f in zip(ladder, flow, strict=True) if h == chain[0]
            )  # the ACK has the INVITE's CSeq number
            of_it = [h for h, f in zip(ladder, flow, strict=True) if f["cseq"].split()[0] == number]
            assert [h for h in of_it if h in chain] == chain, ladder
        # Every response after its request on the same hop.
        for i, (f, hop) in enumerate(zip(flow, ladder, strict=True)):
            if hop[2].isdigit():
                asked = [
                    r for r in flow[:i]
                    if r["cseq"] == f["cseq"] and not r["label"][0].isdigit()
                    and (r["src"], r["dst"]) == (f["dst"], f["src"])
                ]  # fmt: skip
                assert asked, f"{hop} before its request: {ladder}"
