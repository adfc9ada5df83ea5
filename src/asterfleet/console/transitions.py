"""What changed between two views of the fleet, as events (pure).

The console watches etcd; every new view is compared with the previous one
and the differences are recorded, one event per change with one word for
it: a node joined or left, its effective state changed (draining, drained,
undrained, unhealthy, recovered, ...), its weight changed, a balancer
appeared, disappeared or failed a reload. The actor is whoever made the
change: the author of the new intent, or the node's agent.
"""

from __future__ import annotations

from dataclasses import dataclass

from asterfleet.fleet.model import AdminIntent, BalancerStatus, EffectiveState
from asterfleet.fleet.view import FleetView, NodeView

# The kinds of event, for the filter on the Events page.
KINDS = (
    "joined",
    "left",
    "draining",
    "drained",
    "undrained",
    "maintenance",
    "unhealthy",
    "recovered",
    "active",
    "starting",
    "weight",
    "balancer-joined",
    "balancer-left",
    "balancer-error",
)

# Who changed a node when its own record did (not an operator): its agent.
AGENT = "agent"
# More joins (or leaves) than this in one change are one summary event.
BURST = 10

_STATE_KIND = {
    EffectiveState.DRAINING: "draining",
    EffectiveState.DRAINED: "drained",
    EffectiveState.MAINTENANCE: "maintenance",
    EffectiveState.UNHEALTHY: "unhealthy",
    EffectiveState.ACTIVE: "active",
    EffectiveState.STARTING: "starting",
}
_HELD = (EffectiveState.DRAINING, EffectiveState.DRAINED, EffectiveState.MAINTENANCE)


@dataclass(frozen=True)
class EventDraft:
    kind: str
    node_id: str
    message: str
    actor: str = ""


def _intent_key(intent: AdminIntent | None) -> tuple[bool, bool, int | None]:
    if intent is None:
        return (False, False, None)
    return (intent.drain, intent.maintenance, intent.weight)


def _actor(old: NodeView, new: NodeView) -> str:
    """Who caused a change: whoever wrote the new intent when the intent
    changed (an intent deleted by hand has no author: ""), else the agent.
    Never the previous intent's author: they did not make this change."""
    if _intent_key(old.intent) != _intent_key(new.intent):
        return new.intent.by if new.intent is not None else ""
    return AGENT


def state_kind(old: EffectiveState, new: EffectiveState) -> str:
    """The word for a change of effective state."""
    if new is EffectiveState.ACTIVE:
        if old is EffectiveState.UNHEALTHY:
            return "recovered"
        if old in _HELD:
            return "undrained"
    return _STATE_KIND[new]


def _node_changes(old: NodeView, new: NodeView) -> list[EventDraft]:
    out: list[EventDraft] = []
    actor = _actor(old, new)
    if old.state != new.state:
        note = new.intent.note if new.intent is not None and new.intent.note else ""
        out.append(
            EventDraft(
                state_kind(old.state, new.state),
                new.id,
                f"{new.id} is {new.state.value} (was {old.state.value})"
                + (f": {note}" if note and actor != AGENT else ""),
                actor,
            )
        )
    if old.weight != new.weight:
        out.append(
            EventDraft("weight", new.id, f"{new.id} weight {old.weight} -> {new.weight}", actor)
        )
    return out


def _summarised(kind: str, drafts: list[EventDraft], verb: str) -> list[EventDraft]:
    """A burst of joins (a lab starting, a console starting over a big fleet)
    is one event listing the nodes, not hundreds (pages truncate the list)."""
    if len(drafts) <= BURST:
        return drafts
    ids = [d.node_id for d in drafts]
    return [EventDraft(kind, "", f"{len(ids)} nodes {verb}: {', '.join(ids)}", drafts[0].actor)]


def summarised_ids(message: str) -> list[str]:
    """The node ids of a summary event (node ids hold no ':' or ', ')."""
    _, _, ids = message.partition(": ")
    return [i for i in ids.split(", ") if i]


def _joined(n: NodeView) -> EventDraft:
    rec = n.record
    return EventDraft(
        "joined", n.id, f"{n.id} joined set {rec.set} at {rec.sip_uri} ({n.state.value})", AGENT
    )


def _left(node_id: str) -> EventDraft:
    return EventDraft("left", node_id, f"{node_id} left (its lease ended)", AGENT)


def membership(known: set[str], view: FleetView) -> list[EventDraft]:
    """Joins and leaves against the members the events table knows, for a
    console's first view: the first nodes of a lab are "joined" too, and a
    node that left while no console watched is "left"."""
    present = {n.id: n for n in view.nodes}
    joined = [_joined(present[i]) for i in sorted(present.keys() - known)]
    left = [_left(i) for i in sorted(known - present.keys())]
    return _summarised("joined", joined, "joined") + _summarised("left", left, "left")


def _balancer_changes(old: BalancerStatus | None, new: BalancerStatus) -> list[EventDraft]:
    if old is None:
        return [EventDraft("balancer-joined", "", f"balancer {new.id} joined")]
    failed_now = not new.last_reload_ok or bool(new.last_error)
    failed_before = not old.last_reload_ok or bool(old.last_error)
    if failed_now and (not failed_before or new.last_error != old.last_error):
        return [
            EventDraft(
                "balancer-error",
                "",
                f"balancer {new.id}: {new.last_error or 'the last reload failed'}",
            )
        ]
    return []


def diff_views(old: FleetView, new: FleetView) -> list[EventDraft]:
    """The events that take the fleet from ``old`` to ``new``, in a stable order."""
    before = {n.id: n for n in old.nodes}
    after = {n.id: n for n in new.nodes}
    joined = [_joined(after[i]) for i in sorted(after.keys() - before.keys())]
    left = [_left(i) for i in sorted(before.keys() - after.keys())]
    out = _summarised("joined", joined, "joined") + _summarised("left", left, "left")
    for node_id in sorted(before.keys() & after.keys()):
        out.extend(_node_changes(before[node_id], after[node_id]))
    old_lbs = {b.id: b for b in old.balancers}
    new_lbs = {b.id: b for b in new.balancers}
    for lb_id in sorted(old_lbs.keys() | new_lbs.keys()):
        if lb_id not in new_lbs:
            out.append(EventDraft("balancer-left", "", f"balancer {lb_id} left"))
        else:
            out.extend(_balancer_changes(old_lbs.get(lb_id), new_lbs[lb_id]))
    return out
