"""Operator actions on the fleet: one implementation for CLI, console and API.

Each action is a read-modify-write of the node's admin record, so that a
drain does not erase a weight override set earlier. The record carries who
did it and when.
"""

from __future__ import annotations

import time

from asterfleet.errors import UsageError
from asterfleet.etcd_client import Etcd
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import AdminIntent, check_node_id, parse_admin
from asterfleet.fleet.view import FleetView, build_view, parse_snapshot


async def read_fleet(etcd: Etcd, ks: Keyspace) -> FleetView:
    snap = await etcd.get_prefix(ks.prefix)
    return build_view(snap.revision, parse_snapshot(ks, snap.items))


async def read_intent(etcd: Etcd, ks: Keyspace, node_id: str) -> AdminIntent:
    kv = await etcd.get(ks.admin_of(node_id))
    if kv is None:
        return AdminIntent()
    try:
        return parse_admin(kv.key, kv.value)
    except Exception:
        return AdminIntent()


async def _update(
    etcd: Etcd, ks: Keyspace, node_id: str, by: str, note: str | None, **changes: object
) -> AdminIntent:
    check_node_id(node_id)
    current = await read_intent(etcd, ks, node_id)
    data = current.model_dump()
    data.update(changes)
    data["by"] = by
    data["at"] = time.time()
    if note is not None:
        data["note"] = note
    intent = AdminIntent.model_validate(data)
    if intent.is_default():
        await etcd.delete(ks.admin_of(node_id))
    else:
        await etcd.put(ks.admin_of(node_id), intent.to_json())
    return intent


async def require_node(etcd: Etcd, ks: Keyspace, node_id: str) -> None:
    check_node_id(node_id)
    if await etcd.get(ks.node(node_id)) is None:
        raise UsageError(
            f"no node {node_id!r} in cluster {ks.cluster!r}: see 'asterfleet fleet ls'"
        )


async def drain(
    etcd: Etcd, ks: Keyspace, node_id: str, by: str, note: str | None = None
) -> AdminIntent:
    """No new calls to the node; calls in progress continue."""
    await require_node(etcd, ks, node_id)
    return await _update(etcd, ks, node_id, by, note, drain=True)


async def undrain(
    etcd: Etcd, ks: Keyspace, node_id: str, by: str, note: str | None = None
) -> AdminIntent:
    return await _update(etcd, ks, node_id, by, note, drain=False, maintenance=False)


async def set_weight(
    etcd: Etcd, ks: Keyspace, node_id: str, weight: int | None, by: str, note: str | None = None
) -> AdminIntent:
    """Override the node's weight (None returns to the agent's own weight)."""
    if weight is not None and not 0 <= weight <= 1000:
        raise UsageError(f"weight {weight} is out of range: use 0 to 1000 (0 = no new calls)")
    await require_node(etcd, ks, node_id)
    return await _update(etcd, ks, node_id, by, note, weight=weight)
