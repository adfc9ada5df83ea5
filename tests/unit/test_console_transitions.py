"""What the console records when the fleet changes (pure diff of two views)."""

from __future__ import annotations

from typing import Any

import pytest

from asterfleet.console.transitions import BURST, EventDraft, diff_views, membership, summarised_ids
from asterfleet.fleet.model import AdminIntent, BalancerStatus, NodeRecord, NodeState
from asterfleet.fleet.view import FleetView, Parsed, build_view


def node(
    node_id: str, state: NodeState = NodeState.ACTIVE, weight: int = 1, calls: int | None = None
) -> NodeRecord:
    return NodeRecord(
        id=node_id,
        sip_uri="sip:10.0.0.1:5060",
        state=state,
        weight=weight,
        started_at=1.0,
        active_calls=calls,
    )


def view(
    nodes: list[NodeRecord],
    intents: dict[str, AdminIntent] | None = None,
    balancers: list[BalancerStatus] | None = None,
) -> FleetView:
    parsed = Parsed(
        nodes={n.id: n for n in nodes},
        intents=intents or {},
        balancers={b.id: b for b in balancers or []},
    )
    return build_view(1, parsed)


DRAIN = AdminIntent(drain=True, by="alice@console", at=5.0, note="kernel update")


CASES: list[tuple[str, FleetView, FleetView, list[tuple[Any, ...]]]] = [
    ("nothing changed", view([node("a")]), view([node("a")]), []),
    ("a node joined", view([]), view([node("a")]), [("joined", "a", "agent")]),
    ("a node left", view([node("a")]), view([]), [("left", "a", "agent")]),
    (
        "the operator drained a node that has calls: draining, not drained",
        view([node("a", calls=2)]),
        view([node("a", calls=2)], {"a": DRAIN}),
        [("draining", "a", "alice@console")],
    ),
    (
        "its last call ended: drained, reported by the agent",
        view([node("a", calls=1)], {"a": DRAIN}),
        view([node("a", calls=0)], {"a": DRAIN}),
        [("drained", "a", "agent")],
    ),
    (
        "the agent found its box unhealthy",
        view([node("a")]),
        view([node("a", NodeState.UNHEALTHY)]),
        [("unhealthy", "a", "agent")],
    ),
    (
        "the box answers again",
        view([node("a", NodeState.UNHEALTHY)]),
        view([node("a")]),
        [("recovered", "a", "agent")],
    ),
    (
        "undrained from the CLI by someone else: the undrainer is the actor",
        view([node("a", calls=0)], {"a": DRAIN}),
        view([node("a", calls=0)], {"a": AdminIntent(by="root@cli", at=9.0)}),
        [("undrained", "a", "root@cli")],
    ),
    (
        "an intent deleted by hand has no author, never the previous one",
        view([node("a", calls=0)], {"a": DRAIN}),
        view([node("a", calls=0)]),
        [("undrained", "a", "")],
    ),
    (
        "a rollout drains a node",
        view([node("a", calls=3)]),
        view([node("a", calls=3)], {"a": AdminIntent(drain=True, by="rollout:r1")}),
        [("draining", "a", "rollout:r1")],
    ),
    (
        "a weight override",
        view([node("a", weight=10)]),
        view([node("a", weight=10)], {"a": AdminIntent(weight=3, by="bob@api")}),
        [("weight", "a", "bob@api")],
    ),
    (
        "a balancer joined, then failed a reload",
        view([], balancers=[BalancerStatus(id="lb1", list_hash="x")]),
        view([], balancers=[BalancerStatus(id="lb1", last_reload_ok=False, last_error="boom")]),
        [("balancer-error", "", "")],
    ),
    (
        "a balancer left",
        view([], balancers=[BalancerStatus(id="lb1")]),
        view([]),
        [("balancer-left", "", "")],
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_transitions(old: FleetView, new: FleetView, expected: list[tuple[Any, ...]]) -> None:
    got = [(d.kind, d.node_id, d.actor) for d in diff_views(old, new)]
    assert got == expected


def test_a_drain_note_is_in_the_message() -> None:
    (draft,) = diff_views(view([node("a")]), view([node("a")], {"a": DRAIN}))
    assert isinstance(draft, EventDraft)
    assert "kernel update" in draft.message and "draining" in draft.message


def test_a_burst_of_joins_is_one_event_listing_the_nodes() -> None:
    many = [node(f"n{i:04d}") for i in range(1000)]
    (draft,) = diff_views(view([]), view(many))
    assert draft.kind == "joined" and draft.message.startswith("1000 nodes joined: n0000, n0001")
    assert summarised_ids(draft.message) == [n.id for n in many]
    few = [node(f"n{i}") for i in range(BURST)]
    assert [d.node_id for d in diff_views(view([]), view(few))] == [n.id for n in few]


def test_a_starting_console_records_joins_and_leaves_against_the_known_members() -> None:
    first = view([node("a"), node("b")])
    got = [(d.kind, d.node_id) for d in membership({"b", "gone"}, first)]
    assert got == [("joined", "a"), ("left", "gone")]
    assert membership({"a", "b"}, first) == []


@pytest.mark.parametrize(
    ("uri", "hostport"),
    [
        ("sip:10.0.0.5:5070;transport=udp", "10.0.0.5:5070"),
        ("sip:box.example", "box.example:5060"),
        ("sip:[::1]:5071", "[::1]:5071"),
        ("sip:[::1]", "[::1]:5060"),
    ],
)
def test_a_node_is_found_in_capture_by_its_sip_host_and_port(uri: str, hostport: str) -> None:
    from asterfleet.fleet.directory import sip_hostport

    assert sip_hostport(uri) == hostport
