"""The rollout controller's decisions, as a pure function.

:func:`decide` takes a rollout and what the fleet looks like now and returns
the rollout as it should be written back plus the actions to take first.
The controller performs the actions, records their results
(:func:`record`), and compare-and-swaps the record. Every action is safe to
repeat (drain, undrain, a replace to the same target, a gate), so a
controller killed anywhere resumes by deciding again from what it reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from asterfleet.fleet.model import NodeState
from asterfleet.rollout.model import BUSY, NodeProgress, Phase, Rollout, RolloutState, Target

TERMINAL = (Phase.DONE, Phase.ROLLED_BACK, Phase.FAILED, Phase.SKIPPED)


@dataclass(frozen=True)
class NodeFacts:
    """What the fleet says about one node right now."""

    present: bool = True
    state: NodeState | None = NodeState.ACTIVE  # the agent's own state
    version: str | None = None
    image: str | None = None  # the node's ``image`` label
    active_calls: int | None = 0
    drained: bool = False  # operator intent says drain (whoever set it)


@dataclass(frozen=True)
class Facts:
    now: float
    nodes: Mapping[str, NodeFacts]
    #: The lowest etcd revision every balancer has applied; None: no balancer.
    balancer_revision: int | None = None


ABSENT = NodeFacts(present=False, state=None, active_calls=None)


@dataclass(frozen=True)
class Drain:
    node: str


@dataclass(frozen=True)
class Undrain:
    node: str


@dataclass(frozen=True)
class Replace:
    node: str
    target: Target


@dataclass(frozen=True)
class Gate:
    node: str


Action = Drain | Undrain | Replace | Gate


@dataclass
class Decision:
    rollout: Rollout
    actions: list[Action] = field(default_factory=list)


def at_target(facts: NodeFacts, target: Target) -> bool:
    """The node runs ``target`` (only the fields the target names are compared)."""
    if not facts.present:
        return False
    if target.version is not None and facts.version != target.version:
        return False
    return not (target.image is not None and facts.image != target.image)


def _serving(facts: NodeFacts, target: Target) -> bool:
    return at_target(facts, target) and facts.state is NodeState.ACTIVE


def _step_node(
    r: Rollout, n: NodeProgress, f: NodeFacts, facts: Facts, out: list[Action]
) -> NodeProgress:
    now = facts.now
    waited = now - n.since
    if n.phase is Phase.DRAINING:
        if n.drain_revision == 0:
            out.append(Drain(n.id))
            return n
        applied = facts.balancer_revision is None or facts.balancer_revision >= n.drain_revision
        idle = not f.present or f.active_calls == 0
        if applied and idle:
            out.append(Replace(n.id, n.target))
            return n.model_copy(update={"phase": Phase.REPLACING, "since": now, "message": ""})
        if waited >= r.drain_timeout:
            calls = "unknown" if f.active_calls is None else str(f.active_calls)
            out.append(Replace(n.id, n.target))
            return n.model_copy(
                update={
                    "phase": Phase.REPLACING,
                    "since": now,
                    "message": f"drain timed out after {r.drain_timeout:g}s with {calls} call(s)",
                }
            )
        return n
    if n.phase is Phase.REPLACING:
        if not n.replace_issued:
            out.append(Replace(n.id, n.target))
            return n
        if _serving(f, n.target):
            return _gate_or_done(r, n.model_copy(update={"phase": Phase.GATING, "since": now}), out)
        if waited >= r.replace_timeout:
            return _roll_back(
                n,
                f"{n.id} did not come back active with {n.target.describe()} "
                f"within {r.replace_timeout:g}s",
                now,
                out,
            )
        return n
    if n.phase is Phase.GATING:
        if n.gate is None:
            if not _serving(f, n.target):
                return _roll_back(n, f"{n.id} stopped serving before its gate", now, out)
            out.append(Gate(n.id))
            return n
        if n.gate == "passed":
            return _done(n, now, out)
        return _roll_back(n, f"gate failed on {n.id}: {n.gate}", now, out)
    if n.phase is Phase.ROLLING_BACK:
        if not n.replace_issued:
            out.append(Replace(n.id, n.previous))
            return n
        if _serving(f, n.previous):
            if not n.keep_drained:
                out.append(Undrain(n.id))
            return n.model_copy(update={"phase": Phase.ROLLED_BACK, "since": now})
        if waited >= r.replace_timeout:
            return n.model_copy(
                update={
                    "phase": Phase.FAILED,
                    "since": now,
                    "message": n.message + f"; the rollback did not bring {n.id} back within "
                    f"{r.replace_timeout:g}s: it is left drained for an operator",
                }
            )
        return n
    return n


def _gate_or_done(r: Rollout, n: NodeProgress, out: list[Action]) -> NodeProgress:
    if r.gate_calls == 0:
        return _done(n, n.since, out)
    out.append(Gate(n.id))
    return n


def _done(n: NodeProgress, now: float, out: list[Action]) -> NodeProgress:
    if not n.keep_drained:
        out.append(Undrain(n.id))
    return n.model_copy(update={"phase": Phase.DONE, "since": now})


def _roll_back(n: NodeProgress, why: str, now: float, out: list[Action]) -> NodeProgress:
    out.append(Replace(n.id, n.previous))
    return n.model_copy(
        update={"phase": Phase.ROLLING_BACK, "since": now, "replace_issued": False, "message": why}
    )


def _start_node(n: NodeProgress, f: NodeFacts, now: float, out: list[Action]) -> NodeProgress:
    if not f.present:
        return n.model_copy(
            update={"phase": Phase.SKIPPED, "since": now, "message": "not registered"}
        )
    if at_target(f, n.target):
        return n.model_copy(
            update={"phase": Phase.SKIPPED, "since": now, "message": "already at the target"}
        )
    out.append(Drain(n.id))
    return n.model_copy(
        update={
            "phase": Phase.DRAINING,
            "since": now,
            "started": now,
            "previous": Target(version=f.version, image=f.image),
            "keep_drained": f.drained,  # an operator's drain outlives the rollout
        }
    )


def _abort(r: Rollout, now: float, out: list[Action]) -> Rollout:
    nodes = []
    for n in r.nodes:
        if n.phase is Phase.DRAINING:
            # The box is unchanged: give it its calls back.
            if not n.keep_drained:
                out.append(Undrain(n.id))
            n = n.model_copy(
                update={"phase": Phase.PENDING, "since": now, "message": "aborted before replace"}
            )
        elif n.phase in BUSY and "left drained" not in n.message:
            n = n.model_copy(
                update={
                    "message": (n.message + "; " if n.message else "")
                    + "aborted while being replaced: left drained, check it and "
                    f"'asterfleet fleet undrain {n.id}'"
                }
            )
        nodes.append(n)
    return r.model_copy(update={"nodes": nodes})


def decide(r: Rollout, facts: Facts) -> Decision:
    """The next safe step of ``r`` given ``facts``; running it twice is harmless."""
    out: list[Action] = []
    if r.state is RolloutState.ABORTED:
        new = _abort(r, facts.now, out)
        return Decision(new, out)
    if r.state is not RolloutState.RUNNING:
        return Decision(r, out)

    nodes = [
        _step_node(r, n, facts.nodes.get(n.id, ABSENT), facts, out) if n.phase in BUSY else n
        for n in r.nodes
    ]
    failed = [n for n in nodes if n.phase in (Phase.ROLLED_BACK, Phase.FAILED)]
    busy = sum(1 for n in nodes if n.phase in BUSY)
    done = sum(1 for n in nodes if n.phase is Phase.DONE)
    update: dict[str, object] = {}
    paused_now = r.pause_after is not None and done >= r.pause_after
    if not failed and not paused_now:
        for i, n in enumerate(nodes):
            if busy >= r.max_unavailable:
                break
            if n.phase is Phase.PENDING:
                nodes[i] = _start_node(n, facts.nodes.get(n.id, ABSENT), facts.now, out)
                busy += nodes[i].phase in BUSY
    update["nodes"] = nodes
    busy = sum(1 for n in nodes if n.phase in BUSY)
    pending = any(n.phase is Phase.PENDING for n in nodes)
    if failed and busy == 0:
        first = failed[0]
        what = "rolled back" if first.phase is Phase.ROLLED_BACK else "left drained"
        update["state"] = RolloutState.FAILED
        update["reason"] = f"{first.message} ({first.id} {what}); the rollout stopped"
    elif not pending and busy == 0:
        update["state"] = RolloutState.SUCCEEDED
        update["reason"] = f"{done} node(s) at {r.target.describe()}"
    elif paused_now and busy == 0 and pending:
        update["state"] = RolloutState.PAUSED
        update["pause_after"] = None
        update["reason"] = (
            f"paused after {done} node(s) as asked (--pause-after): "
            f"'asterfleet rollout resume {r.id}' goes on"
        )
    return Decision(r.model_copy(update=update), out)


def record(r: Rollout, action: Action, result: int | str | None) -> Rollout:
    """``r`` with the outcome of ``action`` written into its node's progress:
    the drain's etcd revision, that the replace ran (and why it failed, if it
    did: the node then waits out its replace timeout and is rolled back), the
    gate's verdict."""
    nodes = []
    for n in r.nodes:
        if n.id == action.node:
            if isinstance(action, Drain) and isinstance(result, int):
                n = n.model_copy(update={"drain_revision": result})
            elif isinstance(action, Replace):
                update: dict[str, object] = {"replace_issued": True}
                if isinstance(result, str):  # why the replace action failed
                    update["message"] = (n.message + "; " if n.message else "") + result
                n = n.model_copy(update=update)
            elif isinstance(action, Gate) and isinstance(result, str):
                n = n.model_copy(update={"gate": result})
        nodes.append(n)
    return r.model_copy(update={"nodes": nodes})
