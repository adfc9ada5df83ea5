"""Records are validated on write and on read; a bad one is a clear error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterfleet.errors import RecordError
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import (
    AdminIntent,
    EffectiveState,
    NodeRecord,
    NodeState,
    check_node_id,
    effective_state,
    effective_weight,
    parse_node,
)
from asterfleet.fleet.view import build_view, parse_item, parse_snapshot, remove_item

KS = Keyspace("c1")
GOOD = {"id": "ast1", "sip_uri": "sip:10.0.0.5:5060;transport=udp", "weight": 2}


def test_round_trip() -> None:
    rec = NodeRecord.model_validate(GOOD)
    assert parse_node(KS.node("ast1"), rec.to_json()) == rec


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (json.dumps({**GOOD, "sip_uri": "http://x"}).encode(), "sip_uri"),
        (json.dumps({**GOOD, "weight": -1}).encode(), "weight"),
        (json.dumps({**GOOD, "state": "sleeping"}).encode(), "state"),
        (json.dumps({**GOOD, "id": "other"}).encode(), "does not match its key"),
        (json.dumps({"id": "ast1"}).encode(), "sip_uri"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_bad_records_name_the_key_and_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(RecordError) as err:
        parse_node(KS.node("ast1"), raw)
    assert "/asterfleet/c1/nodes/ast1" in str(err.value)
    assert message in str(err.value)


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_record_error(raw: bytes) -> None:
    try:
        rec = parse_node(KS.node("ast1"), raw)
    except RecordError as exc:
        assert "/asterfleet/c1/nodes/ast1" in str(exc)
    else:
        assert rec.id == "ast1"


@pytest.mark.parametrize(
    ("agent", "intent", "calls", "state"),
    [
        (NodeState.ACTIVE, None, 3, EffectiveState.ACTIVE),
        (NodeState.ACTIVE, AdminIntent(drain=True), 3, EffectiveState.DRAINING),
        # Draining and its agent reports no call left: safe to stop.
        (NodeState.ACTIVE, AdminIntent(drain=True), 0, EffectiveState.DRAINED),
        (NodeState.DRAINING, None, 0, EffectiveState.DRAINED),
        # An agent that cannot count calls never makes a node "drained".
        (NodeState.ACTIVE, AdminIntent(drain=True), None, EffectiveState.DRAINING),
        # Idle but not draining: just idle.
        (NodeState.ACTIVE, None, 0, EffectiveState.ACTIVE),
        # Stricter states win over drained.
        (NodeState.UNHEALTHY, AdminIntent(drain=True), 0, EffectiveState.UNHEALTHY),
        (NodeState.ACTIVE, AdminIntent(maintenance=True), 0, EffectiveState.MAINTENANCE),
    ],
)
def test_drained_is_draining_with_no_calls_left(
    agent: NodeState, intent: AdminIntent | None, calls: int | None, state: EffectiveState
) -> None:
    rec = NodeRecord.model_validate({**GOOD, "state": agent, "active_calls": calls})
    assert effective_state(rec, intent) is state


@pytest.mark.parametrize(
    ("agent", "intent", "state"),
    [
        (NodeState.ACTIVE, None, EffectiveState.ACTIVE),
        (NodeState.ACTIVE, AdminIntent(drain=True), EffectiveState.DRAINING),
        (NodeState.UNHEALTHY, AdminIntent(drain=True), EffectiveState.UNHEALTHY),
        (NodeState.DRAINING, AdminIntent(), EffectiveState.DRAINING),
        (NodeState.ACTIVE, AdminIntent(maintenance=True), EffectiveState.MAINTENANCE),
        (NodeState.STARTING, AdminIntent(weight=3), EffectiveState.STARTING),
    ],
)
def test_effective_state_is_the_stricter(
    agent: NodeState, intent: AdminIntent | None, state: EffectiveState
) -> None:
    rec = NodeRecord.model_validate({**GOOD, "state": agent})
    assert effective_state(rec, intent) is state


def test_operator_weight_overrides_the_agents() -> None:
    rec = NodeRecord.model_validate(GOOD)
    assert effective_weight(rec, None) == 2
    assert effective_weight(rec, AdminIntent(weight=7)) == 7


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "x" * 64, "ü"])
def test_invalid_node_ids(bad: str) -> None:
    with pytest.raises(RecordError, match="invalid node id"):
        check_node_id(bad)


def test_keyspace_kinds() -> None:
    assert KS.kind_of("/asterfleet/c1/nodes/a") == ("nodes", "a")
    assert KS.kind_of("/asterfleet/c1/admin/a") == ("admin", "a")
    assert KS.kind_of("/asterfleet/c1/balancers/lb") == ("balancers", "lb")
    assert KS.kind_of("/asterfleet/c1/capture") is None
    assert KS.kind_of("/asterfleet/c2/nodes/a") is None
    assert KS.kind_of("/asterfleet/c1/nodes/a/b") is None


def test_a_bad_record_is_skipped_and_reported_in_the_view() -> None:
    from asterfleet.etcd_client import KeyValue

    items = [
        KeyValue(KS.node("ast1"), NodeRecord.model_validate(GOOD).to_json(), 2, 0),
        KeyValue(KS.node("ast2"), b"{broken", 3, 0),
        KeyValue(KS.admin_of("ast1"), AdminIntent(drain=True, by="ops").to_json(), 4, 0),
        KeyValue(KS.admin_of("gone"), AdminIntent(drain=True).to_json(), 5, 0),
    ]
    parsed = parse_snapshot(KS, items)
    view = build_view(5, parsed)
    assert [n.id for n in view.nodes] == ["ast1"]
    assert view.nodes[0].state is EffectiveState.DRAINING
    assert "gone" in view.orphan_intents
    assert len(view.problems) == 1 and "nodes/ast2" in view.problems[0]
    # A later good write of the same key clears the problem.
    fixed = NodeRecord.model_validate({**GOOD, "id": "ast2", "sip_uri": "sip:h:5070"})
    parse_item(KS, KS.node("ast2"), fixed.to_json(), parsed)
    assert not parsed.problems and "ast2" in parsed.nodes
    remove_item(KS, KS.node("ast2"), parsed)
    assert "ast2" not in parsed.nodes
