"""Nodes join the cluster and take calls in the proportions asked for."""

from __future__ import annotations

import pytest

from asterfleet.lab.stack import Stack
from asterfleet.runtime.process import wait_for

pytestmark = pytest.mark.integration


def test_a_node_that_starts_becomes_routable_and_takes_calls(stack: Stack) -> None:
    assert stack.dispatcher() == []  # an empty fleet: Kamailio answers 503

    node = stack.add_node("ast1")
    stack.wait_routable(node)
    dest = stack.dispatcher_by_uri()[node.sip_uri]
    assert dest.attrs["duid"] == "ast1"
    assert dest.flags == "AP"

    uac = stack.start_calls(rate=10, hold_ms=200, max_calls=20)
    assert uac.wait(60) == 0
    stats = uac.stats()
    assert (stats.successful_calls, stats.failed_calls) == (20, 0)
    wait_for(lambda: node.uas.invites_received() == 20, 5, what="20 INVITEs at ast1")


def test_weights_1_2_1_share_2000_calls_25_50_25(stack: Stack) -> None:
    weights = {"ast1": 1, "ast2": 2, "ast3": 1}
    nodes = [stack.add_node(n, weight=w) for n, w in weights.items()]
    for b in nodes:
        stack.wait_routable(b)
    percent = {d.attrs["duid"]: int(d.attrs["weight"]) for d in stack.dispatcher()}
    assert percent == {"ast1": 25, "ast2": 50, "ast3": 25}

    uac = stack.start_calls(rate=200, hold_ms=0, max_calls=2000)
    assert uac.wait(120) == 0
    stats = uac.stats()
    assert (stats.successful_calls, stats.failed_calls) == (2000, 0)

    def received() -> dict[str, int] | None:
        got = {b.node_id: b.uas.invites_received() for b in nodes}
        return got if sum(got.values()) == 2000 else None

    got = wait_for(received, 5, what="2000 INVITEs counted at the boxes")
    assert isinstance(got, dict)
    for node_id, weight in weights.items():
        share = 100 * got[node_id] / 2000
        expected = 100 * weight / 4
        assert abs(share - expected) <= 5, f"{node_id} took {share:.1f}% (want {expected}%)"
