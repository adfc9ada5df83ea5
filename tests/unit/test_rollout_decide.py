"""The rollout controller's next step, from a rollout and the fleet as it is."""

from __future__ import annotations

import pytest

from asterfleet.fleet.model import NodeState
from asterfleet.rollout.decide import (
    Action,
    Drain,
    Facts,
    Gate,
    NodeFacts,
    Replace,
    Undrain,
    decide,
    record,
)
from asterfleet.rollout.model import NodeProgress, Phase, Rollout, RolloutState, Target

V1, V2 = Target(version="1"), Target(version="2")
NOW = 1000.0


def rollout(*nodes: NodeProgress, **kw: object) -> Rollout:
    base: dict[str, object] = {"id": "r1", "cluster": "c", "target": V2, "gate_calls": 5}
    base.update(kw)
    return Rollout.model_validate({**base, "nodes": [n.model_dump() for n in nodes]})


def node(node_id: str, phase: Phase = Phase.PENDING, **kw: object) -> NodeProgress:
    return NodeProgress.model_validate(
        {"id": node_id, "phase": phase, "target": V2, "previous": V1, "since": 990.0, **kw}
    )


def at(version: str, **kw: object) -> NodeFacts:
    return NodeFacts(version=version, **kw)  # type: ignore[arg-type]


GONE = NodeFacts(present=False, state=None, active_calls=None)


@pytest.mark.parametrize(
    ("case", "r", "nodes", "lb_rev", "phases", "actions", "state"),
    [
        (
            "first pending node is drained, the next waits (max unavailable 1)",
            rollout(node("a"), node("b")),
            {"a": at("1"), "b": at("1")},
            None,
            ["draining", "pending"],
            [Drain("a")],
            "running",
        ),
        (
            "max unavailable 2 drains two at once",
            rollout(node("a"), node("b"), node("c"), max_unavailable=2),
            {"a": at("1"), "b": at("1"), "c": at("1")},
            None,
            ["draining", "draining", "pending"],
            [Drain("a"), Drain("b")],
            "running",
        ),
        (
            "a node already at the target is skipped",
            rollout(node("a"), node("b")),
            {"a": at("2"), "b": at("1")},
            None,
            ["skipped", "draining"],
            [Drain("b")],
            "running",
        ),
        (
            "drain written but not yet applied by every balancer: wait",
            rollout(node("a", Phase.DRAINING, drain_revision=50)),
            {"a": at("1", active_calls=0, drained=True)},
            49,
            ["draining"],
            [],
            "running",
        ),
        (
            "drain applied but calls still up: wait",
            rollout(node("a", Phase.DRAINING, drain_revision=50)),
            {"a": at("1", active_calls=3, drained=True)},
            50,
            ["draining"],
            [],
            "running",
        ),
        (
            "calls of unknown number count as not idle",
            rollout(node("a", Phase.DRAINING, drain_revision=50)),
            {"a": at("1", active_calls=None, drained=True)},
            50,
            ["draining"],
            [],
            "running",
        ),
        (
            "drain applied and idle: replace",
            rollout(node("a", Phase.DRAINING, drain_revision=50)),
            {"a": at("1", active_calls=0, drained=True)},
            51,
            ["replacing"],
            [Replace("a", V2)],
            "running",
        ),
        (
            "drain timeout passed: replace anyway",
            rollout(node("a", Phase.DRAINING, drain_revision=50, since=0.0), drain_timeout=60),
            {"a": at("1", active_calls=2, drained=True)},
            51,
            ["replacing"],
            [Replace("a", V2)],
            "running",
        ),
        (
            "a drain whose write was not recorded is written again",
            rollout(node("a", Phase.DRAINING)),
            {"a": at("1")},
            None,
            ["draining"],
            [Drain("a")],
            "running",
        ),
        (
            "a replace not yet recorded as issued is issued again (restarted controller)",
            rollout(node("a", Phase.REPLACING)),
            {"a": at("1", drained=True)},
            None,
            ["replacing"],
            [Replace("a", V2)],
            "running",
        ),
        (
            "old box still registered: wait",
            rollout(node("a", Phase.REPLACING, replace_issued=True)),
            {"a": at("1", drained=True)},
            None,
            ["replacing"],
            [],
            "running",
        ),
        (
            "new box up at the target but still starting: wait",
            rollout(node("a", Phase.REPLACING, replace_issued=True)),
            {"a": at("2", state=NodeState.STARTING, drained=True)},
            None,
            ["replacing"],
            [],
            "running",
        ),
        (
            "new box active at the target: gate it",
            rollout(node("a", Phase.REPLACING, replace_issued=True)),
            {"a": at("2", drained=True)},
            None,
            ["gating"],
            [Gate("a")],
            "running",
        ),
        (
            "no gate calls asked: straight to undrain",
            rollout(node("a", Phase.REPLACING, replace_issued=True), gate_calls=0),
            {"a": at("2", drained=True)},
            None,
            ["done"],
            [Undrain("a")],
            "succeeded",
        ),
        (
            "new box never came back: roll back",
            rollout(node("a", Phase.REPLACING, replace_issued=True, since=0.0)),
            {"a": GONE},
            None,
            ["rolling-back"],
            [Replace("a", V1)],
            "running",
        ),
        (
            "gate passed: undrain, next node starts",
            rollout(node("a", Phase.GATING, gate="passed"), node("b")),
            {"a": at("2", drained=True), "b": at("1")},
            None,
            ["done", "draining"],
            [Undrain("a"), Drain("b")],
            "running",
        ),
        (
            "gate failed: roll back, nothing new starts",
            rollout(node("a", Phase.GATING, gate="2 of 5 calls failed"), node("b")),
            {"a": at("2", drained=True), "b": at("1")},
            None,
            ["rolling-back", "pending"],
            [Replace("a", V1)],
            "running",
        ),
        (
            "rolled back box serving the old version: undrain, the rollout fails",
            rollout(
                node("a", Phase.ROLLING_BACK, replace_issued=True, message="gate failed on a: x"),
                node("b"),
            ),
            {"a": at("1", drained=True), "b": at("1")},
            None,
            ["rolled-back", "pending"],
            [Undrain("a")],
            "failed",
        ),
        (
            "an operator's own drain is kept after the node is done",
            rollout(node("a", Phase.GATING, gate="passed", keep_drained=True)),
            {"a": at("2", drained=True)},
            None,
            ["done"],
            [],
            "succeeded",
        ),
        (
            "pause after 1 node: paused once the node is done",
            rollout(node("a", Phase.GATING, gate="passed"), node("b"), pause_after=1),
            {"a": at("2", drained=True), "b": at("1")},
            None,
            ["done", "pending"],
            [Undrain("a")],
            "paused",
        ),
        (
            "paused: nothing happens",
            rollout(node("a", Phase.DRAINING, drain_revision=5), state=RolloutState.PAUSED),
            {"a": at("1", active_calls=0, drained=True)},
            10,
            ["draining"],
            [],
            "paused",
        ),
        (
            "aborted: a node still draining gets its calls back, a replaced one stays drained",
            rollout(
                node("a", Phase.GATING),
                node("b", Phase.DRAINING, drain_revision=5),
                state=RolloutState.ABORTED,
            ),
            {"a": at("2", drained=True), "b": at("1", drained=True)},
            None,
            ["gating", "pending"],
            [Undrain("b")],
            "aborted",
        ),
        (
            "a node gone when its turn comes is skipped",
            rollout(node("a")),
            {},
            None,
            ["skipped"],
            [],
            "succeeded",
        ),
    ],
)
def test_decide(
    case: str,
    r: Rollout,
    nodes: dict[str, NodeFacts],
    lb_rev: int | None,
    phases: list[str],
    actions: list[Action],
    state: str,
) -> None:
    d = decide(r, Facts(NOW, nodes, lb_rev))
    assert [n.phase.value for n in d.rollout.nodes] == phases, case
    assert d.actions == actions, case
    assert d.rollout.state.value == state, case


def test_deciding_twice_changes_nothing_more() -> None:
    r = rollout(node("a", Phase.DRAINING, drain_revision=50), node("b"))
    facts = Facts(NOW, {"a": at("1", active_calls=2, drained=True), "b": at("1")}, 50)
    once = decide(r, facts)
    assert decide(once.rollout, facts).rollout == once.rollout


def test_a_failed_rollout_says_why() -> None:
    r = rollout(
        node("a", Phase.ROLLING_BACK, replace_issued=True, message="gate failed on a: 2 of 5")
    )
    d = decide(r, Facts(NOW, {"a": at("1", drained=True)}))
    assert d.rollout.reason == "gate failed on a: 2 of 5 (a rolled back); the rollout stopped"


def test_record_writes_each_result_into_its_node() -> None:
    r = rollout(node("a", Phase.DRAINING), node("b", Phase.GATING))
    r = record(r, Drain("a"), 77)
    r = record(r, Gate("b"), "passed")
    r = record(r, Replace("b", V2), None)
    r = record(r, Replace("a", V2), "replace failed: systemctl exited 5")
    a, b = r.nodes
    assert (a.drain_revision, a.replace_issued) == (77, True)
    assert a.message == "replace failed: systemctl exited 5"
    assert (b.gate, b.replace_issued, b.message) == ("passed", True, "")
