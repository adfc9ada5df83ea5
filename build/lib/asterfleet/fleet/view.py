"""The fleet as operators see it, built from one etcd snapshot (pure)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from asterfleet.errors import RecordError
from asterfleet.etcd_client import KeyValue
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import (
    AdminIntent,
    BalancerStatus,
    EffectiveState,
    NodeRecord,
    effective_state,
    effective_weight,
    parse_admin,
    parse_balancer,
    parse_node,
)


@dataclass(frozen=True)
class NodeView:
    record: NodeRecord
    intent: AdminIntent | None
    state: EffectiveState
    weight: int

    @property
    def id(self) -> str:
        return self.record.id

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        rec = self.record
        return {
            "id": rec.id,
            "set": rec.set,
            "sip_uri": rec.sip_uri,
            "state": self.state.value,
            "agent_state": rec.state.value,
            "operator": operator_summary(self.intent),
            "weight": self.weight,
            "priority": rec.priority,
            "max_calls": rec.max_calls,
            "active_calls": rec.active_calls,
            "version": rec.version,
            "agent_version": rec.agent_version,
            "labels": rec.labels,
            "media_address": rec.media_address,
            "probe": rec.probe,
            "started_at": rec.started_at,
            "age_seconds": round(max(0.0, now - rec.started_at), 1) if rec.started_at else None,
            "intent": self.intent.model_dump() if self.intent else None,
        }


def operator_summary(intent: AdminIntent | None) -> str:
    if intent is None or intent.is_default():
        return "-"
    parts = []
    if intent.drain:
        parts.append("drain")
    if intent.maintenance:
        parts.append("maintenance")
    if intent.weight is not None:
        parts.append(f"weight={intent.weight}")
    return ",".join(parts)


@dataclass
class FleetView:
    revision: int
    nodes: list[NodeView] = field(default_factory=list)
    # Intents of nodes not currently registered (kept: they outlive agents).
    orphan_intents: dict[str, AdminIntent] = field(default_factory=dict)
    balancers: list[BalancerStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def node(self, node_id: str) -> NodeView | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def balancers_agree(self) -> bool:
        hashes = {b.list_hash for b in self.balancers}
        return len(hashes) <= 1


@dataclass
class Parsed:
    """The typed records of a snapshot, with what could not be read."""

    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    intents: dict[str, AdminIntent] = field(default_factory=dict)
    balancers: dict[str, BalancerStatus] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # key -> why skipped


def _bucket(parsed: Parsed, kind: str) -> dict[str, Any]:
    buckets: dict[str, dict[str, Any]] = {
        "nodes": parsed.nodes,
        "admin": parsed.intents,
        "balancers": parsed.balancers,
    }
    return buckets[kind]


def parse_item(ks: Keyspace, key: str, value: bytes, into: Parsed) -> None:
    """Parse one key into ``into``; a bad record is recorded, never raised."""
    kind_id = ks.kind_of(key)
    if kind_id is None:
        return
    kind, ident = kind_id
    into.problems.pop(key, None)
    try:
        if kind == "nodes":
            into.nodes[ident] = parse_node(key, value)
        elif kind == "admin":
            into.intents[ident] = parse_admin(key, value)
        else:
            into.balancers[ident] = parse_balancer(key, value)
    except RecordError as exc:
        into.problems[key] = str(exc)
        _bucket(into, kind).pop(ident, None)


def remove_item(ks: Keyspace, key: str, into: Parsed) -> None:
    into.problems.pop(key, None)
    kind_id = ks.kind_of(key)
    if kind_id is None:
        return
    kind, ident = kind_id
    _bucket(into, kind).pop(ident, None)


def parse_snapshot(ks: Keyspace, items: Iterable[KeyValue]) -> Parsed:
    parsed = Parsed()
    for kv in items:
        parse_item(ks, kv.key, kv.value, parsed)
    return parsed


def build_view(revision: int, parsed: Parsed) -> FleetView:
    nodes = []
    for node_id in sorted(parsed.nodes):
        rec = parsed.nodes[node_id]
        intent = parsed.intents.get(node_id)
        nodes.append(
            NodeView(rec, intent, effective_state(rec, intent), effective_weight(rec, intent))
        )
    return FleetView(
        revision=revision,
        nodes=nodes,
        orphan_intents={k: v for k, v in parsed.intents.items() if k not in parsed.nodes},
        balancers=[parsed.balancers[k] for k in sorted(parsed.balancers)],
        problems=[
            f"{k}: skipped, {v}" if not v.startswith(k) else f"skipped {v}"
            for k, v in sorted(parsed.problems.items())
        ],
    )
