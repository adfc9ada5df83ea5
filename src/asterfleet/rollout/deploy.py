"""Continuous deployment: a knot whose build passed starts a rollout of the
image it pushed (the knot's ``--rollout CLUSTER``)."""

from __future__ import annotations

import asyncio
import time

from asterfleet.errors import AsterfleetError
from asterfleet.etcd_client import NO_SECURITY, Etcd, EtcdSecurity
from asterfleet.fleet.keys import Keyspace
from asterfleet.rollout.model import Rollout, Target, new_rollout_id
from asterfleet.rollout.operations import plan_rollout, start_rollout

GATE_CALLS = 5


def start_for_build(
    etcd: str | None,
    cluster: str,
    image: str | None,
    by: str,
    security: EtcdSecurity = NO_SECURITY,
) -> str:
    """Start rolling ``image`` over ``cluster``; one line for the build log."""
    if not image:
        return f"rollout on {cluster}: not started, the build pushed no image"
    if not etcd:
        return f"rollout on {cluster}: not started, the worker has no --etcd"
    now = time.time()

    def plan(node_ids: list[str]) -> Rollout:
        return plan_rollout(
            new_rollout_id(now), cluster, Target(image=image), node_ids, by, now,
            gate_calls=GATE_CALLS,
        )  # fmt: skip

    async def go() -> Rollout:
        async with Etcd(etcd, security=security) as client:
            return await start_rollout(client, Keyspace(cluster), plan)

    try:
        r = asyncio.run(go())
    except AsterfleetError as exc:
        return f"rollout on {cluster}: not started: {exc}"
    return f"rollout {r.id} on {cluster} started: {len(r.nodes)} node(s) to {image}"
