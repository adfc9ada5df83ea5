"""A drained box stays drained, whatever Kamailio's failure route or an
operator's RPC does to its in-memory state (issue 13.4).

Kamailio 5.6.3: any state change on an admin-disabled destination turns
``DX`` into ``IP`` and the next probe reply into ``AP``. The generated
failure route no longer marks disabled destinations, and the balancer reads
``dispatcher.list`` back and corrects drift.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import AdminIntent
from asterfleet.kamailio.rpc import call_sync
from asterfleet.lab.stack import Stack
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import wait_for

pytestmark = pytest.mark.integration


def drain(stack: Stack, node_id: str) -> None:
    async def go() -> None:
        async with Etcd(stack.etcd_endpoint) as etcd:
            intent = AdminIntent(drain=True, note="test", by="test")
            await etcd.put(Keyspace(stack.options.cluster).admin_of(node_id), intent.to_json())

    asyncio.run(go())


def flags(stack: Stack, uri: str) -> str:
    return stack.dispatcher_by_uri()[uri].flags


def test_a_drained_box_failing_late_gets_no_new_calls_when_the_other_box_freezes(
    stack: Stack,
) -> None:
    late = stack.add_node("ast1", scenario="uas_ring_503.xml")
    # ast2's agent does not probe: freezing ast2 changes nothing in etcd, so
    # no reload restores Kamailio's state from the file behind our back.
    other = stack.add_node("ast2", extra=("--probe", "none"))
    stack.wait_routable(late, timeout=60)
    stack.wait_routable(other, timeout=60)
    assert other.uas.process is not None

    # Calls that reach ast1 ring for 3 s, then fail with 503.
    before = stack.start_calls(rate=20, hold_ms=0, max_calls=10, name="before")
    wait_for(
        lambda: late.uas.invites_received() + other.uas.invites_received() == 10,
        10,
        what="10 INVITEs at the boxes",
    )
    assert late.uas.invites_received() >= 1, "no call rang at ast1 (weights 50/50)"
    # Drain ast1 while its calls are still ringing; then freeze ast2.
    drain(stack, "ast1")
    wait_for(lambda: flags(stack, late.sip_uri).startswith("D"), 5, what="ast1 disabled")
    rung = late.uas.invites_received()
    other.uas.process.signal(signal.SIGSTOP)
    try:
        # ast1's ringing calls now answer 503: Kamailio's failure route runs
        # for a disabled destination and fails over to the frozen ast2.
        before.wait(30)
        after = stack.start_calls(rate=5, hold_ms=0, max_calls=15, name="after")
        after.wait(60)
        assert flags(stack, late.sip_uri).startswith("D")
        assert late.uas.invites_received() == rung, "new calls reached the drained box"
        # The balancer never had to correct a failure route's doing.
        log = stack.work_dir.joinpath("balancer.log").read_text()
        assert "kamailio_drift" not in log
    finally:
        other.uas.process.signal(signal.SIGCONT)


def test_the_balancer_corrects_a_drained_box_made_active_over_rpc(stack: Stack) -> None:
    # A balancer with metrics, to see the correction counted.
    assert stack.balancer is not None
    stack.balancer.stop(grace=5)
    port = free_port()
    stack.start_balancer(extra=("--metrics-listen", f"127.0.0.1:{port}"))
    box = stack.add_node("ast1")
    other = stack.add_node("ast2")
    stack.wait_routable(box, timeout=60)
    # Both routable first: a list change (ast2 joining) reloads Kamailio from
    # the file, which would undo the drift before the balancer sees it.
    stack.wait_routable(other, timeout=60)
    drain(stack, "ast1")
    wait_for(lambda: flags(stack, box.sip_uri) == "DX", 5, what="ast1 disabled")

    # What the old failure route (or an operator) did: DX becomes IP, then AP.
    call_sync(stack.rpc_target, "dispatcher.set_state", "ip", 1, box.sip_uri)
    assert not flags(stack, box.sip_uri).startswith("D")
    # Corrected within the 2 s reconcile interval (plus a probe's worth).
    wait_for(lambda: flags(stack, box.sip_uri) == "DX", 5, what="ast1 disabled again")

    def corrections() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        for line in text.splitlines():
            if line.startswith('asterfleet_balancer_kamailio_corrections_total{kind="set_state"}'):
                return float(line.split()[-1])
        return 0.0

    assert corrections() >= 1
    log = stack.work_dir.joinpath("balancer.log").read_text()
    assert "kamailio_drift" in log and "ast1" in log
