"""Operator actions on the fleet: one implementation for CLI, console and API.

Each action is a read-modify-write of the node's admin record, so that a
drain does not erase a weight override set earlier, made atomic by a
compare-and-swap on the record's mod revision: two writers (an operator's
drain and a rollout's weight change, two consoles) never undo each other.
The record carries who did it (exactly as the caller names itself) and when.
A malformed record is reported and left alone, never silently replaced.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from asterfleet.errors import AsterfleetError, RecordError, UsageError
from asterfleet.etcd_client import Etcd, KeyValue
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import AdminIntent, check_node_id, parse_admin
from asterfleet.fleet.view import FleetView, build_view, parse_snapshot


async def read_fleet(etcd: Etcd, ks: Keyspace) -> FleetView:
    snap = await etcd.get_prefix(ks.prefix)
    return build_view(snap.revision, parse_snapshot(ks, snap.items))


class IntentConflict(AsterfleetError):
    """Other writers kept changing a node's admin record: nothing was written."""


# Enough for a handful of consoles, operators and a rollout controller
# writing the same node at once; past that something is looping.
SWAP_ATTEMPTS = 20


def _intent_of(ks: Keyspace, node_id: str, kv: KeyValue | None) -> AdminIntent:
    if kv is None:
        return AdminIntent()
    try:
        return parse_admin(kv.key, kv.value)
    except RecordError as exc:
        raise RecordError(
            f"the admin record of node {node_id!r} is malformed ({exc}): nothing was changed; "
            f"inspect it with 'etcdctl get {ks.admin_of(node_id)}' and remove it with "
            f"'etcdctl del {ks.admin_of(node_id)}' to return the node to its own settings"
        ) from exc


async def read_intent(etcd: Etcd, ks: Keyspace, node_id: str) -> AdminIntent:
    """The node's operator intent; RecordError (saying what to do) when malformed."""
    return _intent_of(ks, node_id, await etcd.get(ks.admin_of(node_id)))


def apply_change(
    current: AdminIntent, by: str, at: float, note: str | None, changes: Mapping[str, object]
) -> AdminIntent:
    """``current`` with ``changes`` applied, signed by ``by`` at ``at``."""
    data = current.model_dump()
    data.update(changes)
    data["by"] = by
    data["at"] = at
    if note is not None:
        data["note"] = note
    return AdminIntent.model_validate(data)


async def _update(
    etcd: Etcd, ks: Keyspace, node_id: str, by: str, note: str | None, **changes: object
) -> AdminIntent:
    """Read, change, compare-and-swap on the record's mod revision; again if
    another writer came in between (so neither undoes the other)."""
    check_node_id(node_id)
    key = ks.admin_of(node_id)
    for _ in range(SWAP_ATTEMPTS):
        kv = await etcd.get(key)
        intent = apply_change(_intent_of(ks, node_id, kv), by, time.time(), note, changes)
        revision = kv.mod_revision if kv is not None else 0
        if kv is None and intent.is_default():
            return intent  # nothing to undo, nothing to write
        # Kept even when it asks for nothing (an undrain): it says who undid
        # the drain and when, for `fleet show`, the node page and the events.
        if await etcd.swap(key, intent.to_json(), revision):
            return intent
    raise IntentConflict(
        f"the admin record of node {node_id!r} changed {SWAP_ATTEMPTS} times while "
        "this change was being written: nothing was written; try again"
    )


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
    """The node takes new calls again. A node that is neither registered nor
    has an intent is a typo: refused, so a script does not believe it worked."""
    if await etcd.get(ks.node(node_id)) is None and await etcd.get(ks.admin_of(node_id)) is None:
        await require_node(etcd, ks, node_id)
    return await _update(etcd, ks, node_id, by, note, drain=False, maintenance=False)


async def set_weight(
    etcd: Etcd, ks: Keyspace, node_id: str, weight: int | None, by: str, note: str | None = None
) -> AdminIntent:
    """Override the node's weight (None returns to the agent's own weight)."""
    if weight is not None and not 0 <= weight <= 1000:
        raise UsageError(f"weight {weight} is out of range: use 0 to 1000 (0 = no new calls)")
    await require_node(etcd, ks, node_id)
    return await _update(etcd, ks, node_id, by, note, weight=weight)
