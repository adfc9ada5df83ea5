"""The node agent tells the truth about its box: unhealthy when it stops
answering, active again when it recovers, draining when it answers 503."""

from __future__ import annotations

import asyncio
import signal

import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord
from asterfleet.lab.stack import Stack
from asterfleet.runtime.process import wait_for

pytestmark = pytest.mark.integration


def node_state(stack: Stack, node_id: str) -> tuple[str, str] | None:
    async def go() -> tuple[str, str] | None:
        async with Etcd(stack.etcd_endpoint) as etcd:
            view = await read_fleet(etcd, Keyspace(stack.options.cluster))
        node = view.node(node_id)
        return None if node is None else (node.record.state.value, node.state.value)

    return asyncio.run(go())


def test_a_box_that_stops_answering_is_unhealthy_then_recovers(stack: Stack) -> None:
    nodes = [stack.add_node(f"ast{i}") for i in (1, 2)]
    for b in nodes:
        stack.wait_routable(b)
    sick = nodes[0]
    assert sick.uas.process is not None

    sick.uas.process.signal(signal.SIGSTOP)  # hangs: OPTIONS go unanswered
    try:
        wait_for(
            lambda: node_state(stack, "ast1") == ("unhealthy", "unhealthy"), 15, what="unhealthy"
        )
        wait_for(
            lambda: stack.dispatcher_by_uri()[sick.sip_uri].flags.startswith("D"),
            5,
            what="ast1 disabled in Kamailio",
        )
        # New calls all go to the healthy box meanwhile.
        uac = stack.start_calls(rate=20, hold_ms=0, max_calls=20)
        assert uac.wait(30) == 0
    finally:
        sick.uas.process.signal(signal.SIGCONT)
    wait_for(lambda: node_state(stack, "ast1") == ("active", "active"), 15, what="recovered")
    stack.wait_routable(sick)


def test_a_box_answering_503_is_draining(stack: Stack) -> None:
    healthy = stack.add_node("ast1")
    shutting_down = stack.add_node("ast2", scenario="uas_503.xml")
    stack.wait_routable(healthy)
    # No call on it: the fleet shows it drained (its agent says draining).
    wait_for(lambda: node_state(stack, "ast2") == ("draining", "drained"), 15, what="drained")
    wait_for(
        lambda: stack.dispatcher_by_uri()[shutting_down.sip_uri].flags.startswith("D"),
        5,
        what="ast2 listed as disabled in Kamailio",
    )
    uac = stack.start_calls(rate=20, hold_ms=0, max_calls=20)
    assert uac.wait(30) == 0
    assert shutting_down.uas.invites_received() == 0


def test_a_box_that_does_not_identify_the_probe_is_a_configuration_error(stack: Stack) -> None:
    """A box whose endpoints identify only the load balancers answers the
    agent's unidentified OPTIONS with 401 (Asterisk 22 does): the agent must
    not call that alive. The node is unhealthy and its record says why."""
    healthy = stack.add_node("ast1")
    stranger = stack.add_node("ast2", scenario="uas_401.xml")
    stack.wait_routable(healthy)
    wait_for(lambda: node_state(stack, "ast2") == ("unhealthy", "unhealthy"), 15, what="unhealthy")
    record = node_record(stack, "ast2")
    assert record.reason is not None
    assert "probe answered 401" in record.reason
    assert "identify" in record.reason
    wait_for(
        lambda: stack.dispatcher_by_uri()[stranger.sip_uri].flags.startswith("D"),
        5,
        what="ast2 listed as disabled in Kamailio",
    )
    uac = stack.start_calls(rate=20, hold_ms=0, max_calls=20)
    assert uac.wait(30) == 0
    assert stranger.uas.invites_received() == 0


def node_record(stack: Stack, node_id: str) -> NodeRecord:
    async def go() -> NodeRecord:
        async with Etcd(stack.etcd_endpoint) as etcd:
            view = await read_fleet(etcd, Keyspace(stack.options.cluster))
        node = view.node(node_id)
        assert node is not None, f"no record for {node_id}"
        return node.record

    return asyncio.run(go())
