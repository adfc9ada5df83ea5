"""Rendering dispatcher.list from the fleet: pure, sorted, deterministic."""

from __future__ import annotations

import pytest

from asterfleet.fleet.dispatcher_list import Algorithm, list_hash, plan, render
from asterfleet.fleet.model import AdminIntent, NodeRecord, NodeState


def node(node_id: str, state: NodeState = NodeState.ACTIVE, **kw: object) -> NodeRecord:
    port = 5060 + int(node_id[-1]) if node_id[-1].isdigit() else 5060
    data: dict[str, object] = {
        "id": node_id,
        "sip_uri": f"sip:10.0.0.1:{port};transport=udp",
        "state": state,
    }
    data.update(kw)
    return NodeRecord.model_validate(data)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if not ln.startswith("#")]


def test_empty_fleet_renders_an_empty_list_so_kamailio_answers_503() -> None:
    text = render(plan([], {}, Algorithm.WEIGHT), Algorithm.WEIGHT)
    assert lines(text) == []


def test_weights_are_percentages_and_lines_are_sorted() -> None:
    nodes = [node("n3", weight=1), node("n1", weight=1), node("n2", weight=2)]
    text = render(plan(nodes, {}, Algorithm.WEIGHT), Algorithm.WEIGHT)
    assert lines(text) == [
        "1 sip:10.0.0.1:5061;transport=udp 8 0 duid=n1;weight=25",
        "1 sip:10.0.0.1:5062;transport=udp 8 0 duid=n2;weight=50",
        "1 sip:10.0.0.1:5063;transport=udp 8 0 duid=n3;weight=25",
    ]


@pytest.mark.parametrize(
    ("state", "intent", "flags"),
    [
        (NodeState.ACTIVE, None, 8),
        (NodeState.STARTING, None, 4),
        (NodeState.DRAINING, None, 4),
        (NodeState.UNHEALTHY, None, 4),
        (NodeState.ACTIVE, AdminIntent(drain=True), 4),
        (NodeState.ACTIVE, AdminIntent(maintenance=True), 4),
        (NodeState.ACTIVE, AdminIntent(weight=0), 4),
        (NodeState.ACTIVE, AdminIntent(weight=5), 8),
        (NodeState.UNHEALTHY, AdminIntent(weight=5), 4),
    ],
)
def test_only_active_nodes_with_weight_take_new_calls(
    state: NodeState, intent: AdminIntent | None, flags: int
) -> None:
    intents = {"n1": intent} if intent else {}
    (dest,) = plan([node("n1", state)], intents, Algorithm.WEIGHT)
    assert dest.flags == flags


def test_disabled_destinations_carry_no_weight_and_come_first_in_the_file() -> None:
    # Kamailio reverses file order within a priority; a weightless first
    # destination would switch weighting off for the whole set.
    nodes = [node("n1"), node("n2", NodeState.DRAINING, priority=5), node("n3")]
    text = render(plan(nodes, {}, Algorithm.WEIGHT), Algorithm.WEIGHT)
    assert lines(text) == [
        "1 sip:10.0.0.1:5062;transport=udp 4 0 duid=n2",
        "1 sip:10.0.0.1:5061;transport=udp 8 0 duid=n1;weight=50",
        "1 sip:10.0.0.1:5063;transport=udp 8 0 duid=n3;weight=50",
    ]


def test_least_calls_uses_maxload_and_round_robin_plain_attrs() -> None:
    nodes = [node("n1", max_calls=40), node("n2")]
    lc = lines(render(plan(nodes, {}, Algorithm.LEAST_CALLS), Algorithm.LEAST_CALLS))
    assert lc == [
        "1 sip:10.0.0.1:5061;transport=udp 8 0 duid=n1;maxload=40",
        "1 sip:10.0.0.1:5062;transport=udp 8 0 duid=n2;maxload=100000",
    ]
    rr = lines(render(plan(nodes, {}, Algorithm.ROUND_ROBIN), Algorithm.ROUND_ROBIN))
    assert rr[0].endswith(" duid=n1")


def test_sets_are_weighted_separately() -> None:
    nodes = [node("n1", set=1), node("n2", set=2, weight=3), node("n3", set=2)]
    dests = plan(nodes, {}, Algorithm.WEIGHT)
    assert [(d.set_id, d.node_id, d.weight) for d in dests] == [
        (1, "n1", 100),
        (2, "n2", 75),
        (2, "n3", 25),
    ]


def test_rendering_is_byte_identical_for_equal_input_in_any_order() -> None:
    nodes = [node(f"n{i}", weight=i) for i in range(1, 8)]
    a = render(plan(nodes, {}, Algorithm.WEIGHT), Algorithm.WEIGHT)
    b = render(plan(list(reversed(nodes)), {}, Algorithm.WEIGHT), Algorithm.WEIGHT)
    assert a == b
    assert list_hash(a) == list_hash(b)
    assert a.kamailio_id if False else Algorithm.WEIGHT.kamailio_id == 9


def test_more_routable_nodes_than_weight_slots_is_reported_not_fatal() -> None:
    from asterfleet.fleet.dispatcher_list import weight_overflow

    nodes = [
        NodeRecord.model_validate(
            {"id": f"n{i:03d}", "sip_uri": f"sip:10.0.0.1:{6000 + i}", "state": "active"}
        )
        for i in range(150)
    ]
    dests = plan(nodes, {}, Algorithm.WEIGHT)
    assert sum(d.weight for d in dests) == 100
    assert sum(1 for d in dests if d.weight > 0) == 100
    # Weightless routable destinations come first in the file.
    first_weighted = next(i for i, d in enumerate(dests) if d.weight > 0)
    assert all(d.weight == 0 for d in dests[:first_weighted])
    (warning,) = weight_overflow(dests, Algorithm.WEIGHT)
    assert "150 routable nodes" in warning and "least-calls" in warning
    assert weight_overflow(plan(nodes, {}, Algorithm.LEAST_CALLS), Algorithm.LEAST_CALLS) == []
