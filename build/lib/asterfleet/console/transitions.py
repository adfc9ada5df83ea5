"""What changed between two views of the fleet, as events (pure).

The console watches etcd; every new view is compared with the previous one
and the differences are recorded: a node joined or left, its effective
state changed (drained, unhealthy, back to active), its weight changed, a
balancer appeared, disappeared or failed a reload.
"""

from __future__ import annotations

from dataclasses import dataclass

from asterfleet.fleet.model import AdminIntent, BalancerStatus, EffectiveState
from asterfleet.fleet.view import FleetView, NodeView

# The kinds of event, for the filter on the Events page.
KINDS = (
    "joined",
    "left",
    "drained",
    "maintenance",
    "unhealthy",
    "active",
    "starting",
    "weight",
    "action",
    "balancer-joined",
    "balancer-left",
    "balancer-error",
)

_STATE_KIND = {
    EffectiveState.DRAINING: "drained",
    EffectiveState.MAINTENANCE: "maintenance",
    EffectiveState.UNHEALTHY: "unhealthy",
    EffectiveState.ACTIVE: "active",
    EffectiveState.STARTING: "starting",
}


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
    """Who caused a change: the operator when the intent changed, else the agent."""
    if _intent_key(old.intent) != _intent_key(new.intent):
        return new.intent.by if new.intent is not None else (old.intent.by if old.intent else "")
    return ""


def _node_changes(old: NodeView, new: NodeView) -> list[EventDraft]:
    out: list[EventDraft] = []
    if old.state != new.state:
        note = new.intent.note if new.intent is not None and new.intent.note else ""
        out.append(
            EventDraft(
                _STATE_KIND[new.state],
                new.id,
                f"{new.id} is {new.state.value} (was {old.state.value})"
                + (f": {note}" if note and _actor(old, new) else ""),
                _actor(old, new),
            )
        )
    if old.weight != new.weight:
        out.append(
            EventDraft(
                "weight",
                new.id,
                f"{new.id} weight {old.weight} -> {new.weight}",
                _actor(old, new),
            )
        )
    return out


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
    out: list[EventDraft] = []
    before = {n.id: n for n in old.nodes}
    after = {n.id: n for n in new.nodes}
    for node_id in sorted(before.keys() | after.keys()):
        o, n = before.get(node_id), after.get(node_id)
        if o is None and n is not None:
            rec = n.record
            out.append(
                EventDraft(
                    "joined",
                    node_id,
                    f"{node_id} joined set {rec.set} at {rec.sip_uri} ({n.state.value})",
                )
            )
        elif n is None and o is not None:
            out.append(EventDraft("left", node_id, f"{node_id} left (its lease ended)"))
        elif o is not None and n is not None:
            out.extend(_node_changes(o, n))
    old_lbs = {b.id: b for b in old.balancers}
    new_lbs = {b.id: b for b in new.balancers}
    for lb_id in sorted(old_lbs.keys() | new_lbs.keys()):
        if lb_id not in new_lbs:
            out.append(EventDraft("balancer-left", "", f"balancer {lb_id} left"))
        else:
            out.extend(_balancer_changes(old_lbs.get(lb_id), new_lbs[lb_id]))
    return out
