"""The rollout controller: a level-triggered loop like the balancer's.

Each pass reads the whole cluster prefix at one revision (nodes, intents,
balancers, rollouts), asks :func:`~asterfleet.rollout.decide.decide` for the
next safe step of every unfinished rollout, performs its actions (drain,
replace, gate, undrain; each safe to repeat), records their results and
compare-and-swaps the rollout record. A pause or abort written meanwhile
makes the swap fail; the next pass decides again from what it reads. When
etcd does not answer, nothing is decided and nothing is done: the rollout
waits where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from asterfleet.errors import AsterfleetError, EtcdUnavailable, RecordError, UsageError
from asterfleet.etcd_client import Etcd, KeyValue
from asterfleet.fleet import actions
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.view import Parsed, parse_snapshot
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
from asterfleet.rollout.gate import GateCalls, run_gate
from asterfleet.rollout.model import Phase, Rollout, RolloutState, parse_rollout
from asterfleet.rollout.replace import (
    REPLACE_LABEL,
    KubeApi,
    ReplaceAction,
    ReplaceFailed,
    parse_replace,
    replace,
)

log = structlog.get_logger("asterfleet.rollout")


class RolloutMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.passes = Counter("asterfleet_rollout_passes", "Reconcile passes", registry=r)
        self.actions = Counter(
            "asterfleet_rollout_actions",
            "Actions taken, by kind and outcome",
            ["action", "outcome"],
            registry=r,
        )
        self.rollouts = Gauge(
            "asterfleet_rollout_rollouts", "Rollouts in etcd by state", ["state"], registry=r
        )
        self.nodes = Gauge(
            "asterfleet_rollout_nodes",
            "Nodes of unfinished rollouts by phase",
            ["phase"],
            registry=r,
        )
        self.etcd_up = Gauge(
            "asterfleet_rollout_etcd_connected", "1 when the last etcd read answered", registry=r
        )
        self.conflicts = Counter(
            "asterfleet_rollout_conflicts",
            "Rollout writes refused because the record changed (pause, abort)",
            registry=r,
        )
        self.node_seconds = Histogram(
            "asterfleet_rollout_node_seconds",
            "Time from drain to done, per node",
            registry=r,
            buckets=(5, 10, 20, 30, 60, 120, 300, 600, 1800),
        )


@dataclass
class ControllerConfig:
    cluster: str
    replace: ReplaceAction | None = None  # when a node names none in its label
    gate: GateCalls = field(default_factory=lambda: GateCalls(()))
    kube: KubeApi | None = None
    interval: float = 0.5


def facts_for(r: Rollout, parsed: Parsed, now: float, revision: int) -> Facts:
    """What ``r`` needs to know about the fleet (pure)."""
    nodes: dict[str, NodeFacts] = {}
    for node_id, rec in parsed.nodes.items():
        intent = parsed.intents.get(node_id)
        nodes[node_id] = NodeFacts(
            present=True,
            state=rec.state,
            version=rec.version,
            image=rec.labels.get("image"),
            active_calls=rec.active_calls,
            # Only someone else's drain is the operator's to keep.
            drained=bool(intent and intent.drain and intent.by != r.actor),
        )
    revisions = [b.revision for b in parsed.balancers.values()]
    return Facts(now, nodes, min(revisions) if revisions else None)


class RolloutController:
    def __init__(self, etcd: Etcd, cfg: ControllerConfig, metrics: RolloutMetrics | None = None):
        self.etcd = etcd
        self.cfg = cfg
        self.ks = Keyspace(cfg.cluster)
        self.metrics = metrics or RolloutMetrics()

    async def reconcile(self) -> None:
        """One pass over every rollout of the cluster."""
        snap = await self.etcd.get_prefix(self.ks.prefix)
        self.metrics.etcd_up.set(1)
        self.metrics.passes.inc()
        parsed = parse_snapshot(self.ks, snap.items)
        by_state: dict[str, int] = {s.value: 0 for s in RolloutState}
        phases: dict[str, int] = {p.value: 0 for p in Phase}
        for kv in snap.items:
            if not kv.key.startswith(self.ks.rollouts):
                continue
            try:
                r = parse_rollout(kv.key, kv.value)
            except RecordError as exc:
                log.warning("rollout_unreadable", key=kv.key, error=str(exc))
                continue
            by_state[r.state.value] += 1
            if r.finished and r.state is not RolloutState.ABORTED:
                continue
            r = await self._step(r, kv, parsed, snap.revision)
            if not r.finished:
                for n in r.nodes:
                    phases[n.phase.value] += 1
        for state, count in by_state.items():
            self.metrics.rollouts.labels(state).set(count)
        for phase, count in phases.items():
            self.metrics.nodes.labels(phase).set(count)

    async def _step(self, r: Rollout, kv: KeyValue, parsed: Parsed, revision: int) -> Rollout:
        decision = decide(r, facts_for(r, parsed, time.time(), revision))
        new = decision.rollout
        for action in decision.actions:
            result = await self._act(new, action, parsed)
            new = record(new, action, result)
        if new == r:
            return r
        new = new.model_copy(update={"updated_at": time.time()})
        if not await self.etcd.swap(kv.key, new.to_json(), kv.mod_revision):
            self.metrics.conflicts.inc()
            log.info("rollout_changed_meanwhile", rollout=r.id)
            return r
        self._log_changes(r, new)
        return new

    def _log_changes(self, old: Rollout, new: Rollout) -> None:
        for before, after in zip(old.nodes, new.nodes, strict=True):
            if before.phase is not after.phase:
                log.info(
                    "node_phase",
                    rollout=new.id,
                    node=after.id,
                    phase=after.phase.value,
                    was=before.phase.value,
                    message=after.message or None,
                )
                if after.phase is Phase.DONE and after.started:
                    self.metrics.node_seconds.observe(max(0.0, after.since - after.started))
        if old.state is not new.state:
            log.info("rollout_state", rollout=new.id, state=new.state.value, reason=new.reason)

    async def _act(self, r: Rollout, action: Action, parsed: Parsed) -> int | str | None:
        kind = type(action).__name__.lower()
        try:
            result = await self._perform(r, action, parsed)
        except EtcdUnavailable:
            raise
        except AsterfleetError as exc:
            self.metrics.actions.labels(kind, "failed").inc()
            log.warning(
                "action_failed", rollout=r.id, node=action.node, action=kind, error=str(exc)
            )
            if isinstance(action, Gate):
                return str(exc)
            return f"replace failed: {exc}" if isinstance(action, Replace) else None
        self.metrics.actions.labels(kind, "done").inc()
        log.info("action", rollout=r.id, node=action.node, action=kind, result=result)
        return result

    async def _perform(self, r: Rollout, action: Action, parsed: Parsed) -> int | str | None:
        etcd, ks = self.etcd, self.ks
        if isinstance(action, Drain):
            note = f"rolling to {r.target.describe() or 'the previous version'}"
            with contextlib.suppress(UsageError):  # gone: nothing to drain
                await actions.drain(etcd, ks, action.node, r.actor, note)
            kv = await etcd.get(ks.admin_of(action.node))
            return kv.mod_revision if kv is not None else (await etcd.get_prefix(ks.nodes)).revision
        if isinstance(action, Undrain):
            intent = await actions.read_intent(etcd, ks, action.node)
            if intent.drain and intent.by != r.actor:
                log.info("undrain_skipped", rollout=r.id, node=action.node, drained_by=intent.by)
                return None  # someone else drained it since: theirs to undo
            await actions.undrain(etcd, ks, action.node, r.actor)
            return None
        if isinstance(action, Replace):
            how = self._replace_action(action.node, parsed)
            log.info(
                "replace", rollout=r.id, node=action.node, how=how.describe(),
                target=action.target.describe(),
            )  # fmt: skip
            await replace(how, action.node, action.target, self.cfg.kube)
            return None
        rec = parsed.nodes.get(action.node)
        if rec is None:
            return f"{action.node} is not registered"
        return await asyncio.to_thread(run_gate, rec.sip_uri, r.gate_calls, self.cfg.gate)

    def _replace_action(self, node_id: str, parsed: Parsed) -> ReplaceAction:
        rec = parsed.nodes.get(node_id)
        label = rec.labels.get(REPLACE_LABEL) if rec is not None else None
        if label:
            return parse_replace(label, f"label {REPLACE_LABEL} of node {node_id!r}:")
        if self.cfg.replace is None:
            raise ReplaceFailed(
                f"node {node_id!r} has no '{REPLACE_LABEL}' label and the controller no "
                "--replace: say how its box is replaced"
            )
        return self.cfg.replace

    async def run(self, shutdown: asyncio.Event) -> int:
        """Reconcile every ``interval`` until ``shutdown``; etcd outages are waited out."""
        log.info("controller_started", cluster=self.cfg.cluster)
        backoff = self.cfg.interval
        while not shutdown.is_set():
            try:
                await self.reconcile()
                backoff = self.cfg.interval
            except EtcdUnavailable as exc:
                self.metrics.etcd_up.set(0)
                if backoff == self.cfg.interval:
                    log.warning("etcd_unavailable", error=str(exc), effect="rollouts wait")
                backoff = min(backoff * 2, 5.0)
            except Exception:  # a bug in one pass must not stop the loop
                log.exception("reconcile_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), backoff)
        log.info("controller_stopped")
        return 0
