"""What the console records when the fleet changes (pure diff of two views)."""

from __future__ import annotations

from typing import Any

import pytest

from asterfleet.console.transitions import EventDraft, diff_views
from asterfleet.fleet.model import AdminIntent, BalancerStatus, NodeRecord, NodeState
from asterfleet.fleet.view import FleetView, Parsed, build_view


def node(node_id: str, state: NodeState = NodeState.ACTIVE, weight: int = 1) -> NodeRecord:
    return NodeRecord(
        id=node_id, sip_uri="sip:10.0.0.1:5060", state=state, weight=weight, started_at=1.0
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
    ("a node joined", view([]), view([node("a")]), [("joined", "a", "")]),
    ("a node left", view([node("a")]), view([]), [("left", "a", "")]),
    (
        "the operator drained a node",
        view([node("a")]),
        view([node("a")], {"a": DRAIN}),
        [("drained", "a", "alice@console")],
    ),
    (
        "the agent found its box unhealthy",
        view([node("a")]),
        view([node("a", NodeState.UNHEALTHY)]),
        [("unhealthy", "a", "")],
    ),
    (
        "undrained back to active",
        view([node("a")], {"a": DRAIN}),
        view([node("a")]),
        [("active", "a", "alice@console")],
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
