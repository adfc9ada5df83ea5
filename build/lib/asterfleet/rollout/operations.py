"""What operators do to rollouts (start, pause, resume, abort, undo): pure
planning and transitions, and the compare-and-swap that stores them. One
implementation for the CLI, the console and continuous deployment."""

from __future__ import annotations

import time
from collections.abc import Callable

from asterfleet.errors import AsterfleetError, RecordError, UsageError
from asterfleet.etcd_client import Etcd
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.keys import Keyspace
from asterfleet.rollout.model import (
    FINISHED,
    NodeProgress,
    Phase,
    Rollout,
    RolloutState,
    Target,
    check_rollout_id,
    new_rollout_id,
    parse_rollout,
)

VERBS = ("pause", "resume", "abort")
SWAP_ATTEMPTS = 20


class RolloutConflict(AsterfleetError):
    """The rollout record kept changing while an operator's change was written."""


def plan_rollout(
    rollout_id: str,
    cluster: str,
    target: Target,
    node_ids: list[str],
    by: str,
    now: float,
    *,
    max_unavailable: int = 1,
    gate_calls: int = 0,
    pause_after: int | None = None,
    drain_timeout: float = 300.0,
    replace_timeout: float = 180.0,
) -> Rollout:
    """A new rollout of ``node_ids`` (in id order) to ``target``."""
    if target.version is None and target.image is None:
        raise UsageError("say what to roll out: --image REF or --version V")
    if not node_ids:
        raise UsageError(
            f"cluster {cluster!r} has no registered node to roll: see 'asterfleet fleet ls'"
        )
    try:
        return Rollout(
            id=rollout_id,
            cluster=cluster,
            target=target,
            max_unavailable=max_unavailable,
            gate_calls=gate_calls,
            pause_after=pause_after,
            drain_timeout=drain_timeout,
            replace_timeout=replace_timeout,
            nodes=[NodeProgress(id=n, target=target) for n in sorted(node_ids)],
            created_by=by,
            created_at=now,
            updated_at=now,
        )
    except ValueError as exc:
        raise UsageError(f"invalid rollout: {exc}") from None


def plan_undo(done: Rollout, rollout_id: str, by: str, now: float) -> Rollout:
    """A rollout putting back what each node of ``done`` ran before it."""
    if not done.finished:
        raise UsageError(
            f"rollout {done.id} is {done.state.value}: abort it first ('asterfleet rollout abort')"
        )
    nodes = [
        NodeProgress(id=n.id, target=n.previous)
        for n in reversed(done.nodes)
        if n.phase is Phase.DONE and (n.previous.version or n.previous.image)
    ]
    if not nodes:
        raise UsageError(f"rollout {done.id} changed no node: nothing to undo")
    targets = {n.target for n in nodes}
    return Rollout(
        id=rollout_id,
        cluster=done.cluster,
        target=targets.pop() if len(targets) == 1 else Target(),
        max_unavailable=done.max_unavailable,
        gate_calls=done.gate_calls,
        drain_timeout=done.drain_timeout,
        replace_timeout=done.replace_timeout,
        nodes=nodes,
        undo_of=done.id,
        created_by=by,
        created_at=now,
        updated_at=now,
    )


def transition(r: Rollout, verb: str, by: str, now: float) -> Rollout:
    """``r`` paused, resumed or aborted by ``by``; UsageError when that makes no sense."""
    allowed = {
        "pause": ((RolloutState.RUNNING,), RolloutState.PAUSED),
        "resume": ((RolloutState.PAUSED,), RolloutState.RUNNING),
        "abort": ((RolloutState.RUNNING, RolloutState.PAUSED), RolloutState.ABORTED),
    }
    if verb not in allowed:
        raise UsageError(f"unknown rollout action {verb!r}: use one of {', '.join(VERBS)}")
    sources, dest = allowed[verb]
    if r.state not in sources:
        raise UsageError(f"rollout {r.id} is {r.state.value}: it cannot be {verb}d")
    reason = {"pause": f"paused by {by}", "resume": "", "abort": f"aborted by {by}"}[verb]
    return r.model_copy(update={"state": dest, "reason": reason, "updated_at": now})


# -- etcd -------------------------------------------------------------------


async def list_rollouts(etcd: Etcd, ks: Keyspace) -> tuple[list[Rollout], list[str]]:
    """Every rollout of the cluster, oldest first, and the records that could not be read."""
    snap = await etcd.get_prefix(ks.rollouts)
    out, problems = [], []
    for kv in snap.items:
        try:
            out.append(parse_rollout(kv.key, kv.value))
        except RecordError as exc:
            problems.append(str(exc))
    out.sort(key=lambda r: (r.created_at, r.id))
    return out, problems


def _pick(rollouts: list[Rollout], rollout_id: str | None, cluster: str) -> Rollout:
    if rollout_id is not None:
        check_rollout_id(rollout_id)
        for r in rollouts:
            if r.id == rollout_id:
                return r
        raise UsageError(
            f"no rollout {rollout_id!r} in cluster {cluster!r}: see 'asterfleet rollout status'"
        )
    current = [r for r in rollouts if r.state not in FINISHED]
    if current:
        return current[-1]
    if rollouts:
        return rollouts[-1]
    raise UsageError(
        f"cluster {cluster!r} has no rollout: start one with 'asterfleet rollout start'"
    )


async def get_rollout(etcd: Etcd, ks: Keyspace, rollout_id: str | None = None) -> Rollout:
    """The rollout named, or the unfinished one, or the latest."""
    rollouts, _ = await list_rollouts(etcd, ks)
    return _pick(rollouts, rollout_id, ks.cluster)


async def start_rollout(etcd: Etcd, ks: Keyspace, plan: Callable[[list[str]], Rollout]) -> Rollout:
    """Store the rollout ``plan(registered node ids)``; refused while another is unfinished."""
    rollouts, _ = await list_rollouts(etcd, ks)
    busy = [r for r in rollouts if r.state not in FINISHED]
    if busy:
        raise UsageError(
            f"rollout {busy[0].id} is {busy[0].state.value} in cluster {ks.cluster!r}: "
            "finish, resume or abort it first"
        )
    fleet = await read_fleet(etcd, ks)
    r = plan([n.id for n in fleet.nodes])
    if not await etcd.swap(ks.rollout(r.id), r.to_json(), 0):
        raise RolloutConflict(f"rollout {r.id} already exists: try again")
    return r


async def change_rollout(
    etcd: Etcd, ks: Keyspace, rollout_id: str | None, verb: str, by: str
) -> Rollout:
    """Pause, resume or abort, by compare-and-swap (the controller never undoes it)."""
    target = (await get_rollout(etcd, ks, rollout_id)).id
    key = ks.rollout(target)
    for _ in range(SWAP_ATTEMPTS):
        kv = await etcd.get(key)
        if kv is None:
            raise UsageError(f"rollout {target} was removed meanwhile")
        new = transition(parse_rollout(key, kv.value), verb, by, time.time())
        if await etcd.swap(key, new.to_json(), kv.mod_revision):
            return new
    raise RolloutConflict(f"rollout {target} kept changing: {verb} was not written; try again")


async def undo_rollout(etcd: Etcd, ks: Keyspace, rollout_id: str | None, by: str) -> Rollout:
    done = await get_rollout(etcd, ks, rollout_id)
    now = time.time()
    return await start_rollout(etcd, ks, lambda _ids: plan_undo(done, new_rollout_id(now), by, now))
