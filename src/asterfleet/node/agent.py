"""The node agent: announces one Asterisk box in etcd and keeps it honest.

It registers the box under a lease (no heartbeat keys, no reaper: when the
agent dies the lease expires and the record goes), probes the local SIP
stack, and drains on SIGTERM: state ``draining``, wait until every balancer
has applied that, wait for calls to end (or the drain timeout), then revoke
the lease and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import aetcd.exceptions
from prometheus_client import CollectorRegistry, Counter, Gauge

from asterfleet import __version__, logs
from asterfleet.errors import EtcdUnavailable, RecordError, UsageError
from asterfleet.etcd_client import NO_SECURITY, Etcd, EtcdSecurity, WatchLost
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, NodeState, parse_balancer
from asterfleet.node.ami import AmiError
from asterfleet.node.calls import AmiCounter, CallCounter, NoCounter
from asterfleet.node.execs import MAX_AGE as EXEC_MAX_AGE
from asterfleet.node.execs import ExecRequest
from asterfleet.node.execs import to_json as exec_json
from asterfleet.node.state import ProbeHistory, ProbeVerdict, classify, next_state
from asterfleet.runtime.tasks import cancel_all, supervise
from asterfleet.sip.options import parse_sip_uri, probe


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


class NodeIdTaken(UsageError):
    """Another live agent holds this node id."""


@dataclass
class NodeAgentConfig:
    etcd: str
    cluster: str
    node_id: str
    sip_uri: str
    etcd_security: EtcdSecurity = NO_SECURITY
    set_id: int = 1
    weight: int = 1
    priority: int = 0
    max_calls: int = 0
    ttl: int = 3
    probe: str = "sip"  # "sip" or "none"
    probe_interval: float = 1.0
    probe_timeout: float = 1.0
    unhealthy_after: int = 2
    drain_timeout: float = 300.0
    # After the balancers applied the drain, how long the box must have shown
    # no calls: covers an INVITE still in flight and a call count read from
    # a stats file that is up to a second old.
    drain_settle: float = 2.0
    media_address: str | None = None
    # After a drain that ended with no calls: "leave" (deregister) or "stop"
    # (ask Asterisk to `core stop gracefully` over AMI, then deregister).
    on_idle: str = "leave"
    version: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.state = Gauge(
            "asterfleet_node_state", "1 for the agent's current state", ["state"], registry=r
        )
        self.active_calls = Gauge("asterfleet_node_active_calls", "Calls on the box", registry=r)
        self.probe_rtt = Gauge(
            "asterfleet_node_probe_rtt_seconds", "Last probe round trip", registry=r
        )
        self.probe_failures = Counter(
            "asterfleet_node_probe_failures", "Probes without a live answer", registry=r
        )
        self.etcd_up = Gauge("asterfleet_node_etcd_connected", "1 when etcd answers", registry=r)
        self.registrations = Counter(
            "asterfleet_node_registrations", "Leases granted and record written", registry=r
        )
        self.writes = Counter("asterfleet_node_record_writes", "Node record writes", registry=r)
        self.count_up = Gauge(
            "asterfleet_node_call_count_up", "1 when the call count is known", registry=r
        )
        self.count_errors = Counter(
            "asterfleet_node_call_count_errors",
            "Times the call count became unavailable (AMI refused, unreachable...)",
            registry=r,
        )
        self.restores = Counter(
            "asterfleet_node_record_restores",
            "Records put back after they disappeared",
            registry=r,
        )


class NodeAgent:
    def __init__(
        self,
        cfg: NodeAgentConfig,
        counter: CallCounter | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.ks = Keyspace(cfg.cluster)
        self.etcd = Etcd(cfg.etcd, security=cfg.etcd_security)
        self.counter = counter or NoCounter()
        self.metrics = metrics or NodeMetrics()
        self.log = logs.get("node", node=cfg.node_id, cluster=cfg.cluster)
        self.uri = parse_sip_uri(cfg.sip_uri)
        self.started_at = time.time()
        self.state = NodeState.STARTING if cfg.probe == "sip" else NodeState.ACTIVE
        self.history = ProbeHistory()
        self.reason: str | None = None
        self.active_calls: int | None = None
        self.calls_error: str | None = None
        self.asterisk_version: str | None = None
        self.probe_note: str | None = None
        self.draining = False
        self.lease: int | None = None
        self.written: bytes | None = None  # record content last written (sans timestamps)
        self.last_revision = 0
        self.registered = False  # the record was written at least once
        self.lost_because: str | None = None  # why the record must be put back
        self.conflict: NodeIdTaken | None = None
        self.last_conflict: str | None = None
        self.dirty = asyncio.Event()
        self.stopping = asyncio.Event()

    # -- the record ---------------------------------------------------------

    def record(self) -> NodeRecord:
        c = self.cfg
        return NodeRecord(
            id=c.node_id,
            set=c.set_id,
            sip_uri=c.sip_uri,
            media_address=c.media_address,
            weight=c.weight,
            priority=c.priority,
            max_calls=c.max_calls,
            state=self.state,
            active_calls=self.active_calls,
            labels=c.labels,
            version=c.version,
            agent_version=__version__,
            started_at=self.started_at,
            updated_at=0.0,
            probe=self.probe_note,
            reason=self.reason,
            calls_error=self.calls_error,
            asterisk_version=self.asterisk_version,
        )

    async def _write(self) -> None:
        """Write the record if it changed (or is missing), under our lease.

        The write is a claim: it succeeds only while the key is ours or
        absent, so a second agent started with the same id is refused
        instead of silently taking the node over.
        """
        rec = self.record()
        content = rec.to_json()
        if self.lease is None:
            self.lease = await self.etcd.grant(self.cfg.ttl)
            self.written = None
            self.metrics.registrations.inc()
            self.log.info("registering", lease=hex(self.lease), state=self.state.value)
        if content == self.written:
            return
        stamped = rec.model_copy(update={"updated_at": time.time()})
        claim = await self.etcd.claim(self.ks.node(self.cfg.node_id), stamped.to_json(), self.lease)
        if claim.outcome == "held":
            raise NodeIdTaken(
                f"node id {self.cfg.node_id!r} is held by another live agent "
                f"(lease {claim.holder:x}): give this box another --id, or stop the other agent"
            )
        if claim.outcome == "created" and self.registered:
            why = self.lost_because or "the record was deleted"
            self.log.warning("record_restored", reason=why, lease=hex(self.lease))
            self.metrics.restores.inc()
        self.lost_because = None
        self.registered = True
        self.last_revision = claim.revision
        self.written = content
        self.metrics.writes.inc()

    async def _check_record(self) -> None:
        """Notice a record that disappeared while our lease lives (deleted
        by hand, or by another agent's lease going away)."""
        kv = await self.etcd.get(self.ks.node(self.cfg.node_id))
        if kv is None or kv.lease != self.lease:
            self.lost_because = (
                "the record was deleted while the lease was alive"
                if kv is None
                else f"the record is under another lease ({kv.lease:x})"
            )
            self.written = None

    # -- loops ----------------------------------------------------------------

    def _decide(self, verdict: ProbeVerdict | None, status: int | None = None) -> None:
        """Every state change goes through here, synchronously: the decision
        is taken from the agent's state and drain flag as they are now, and
        written at once (no await between deciding and writing)."""
        decision = next_state(
            self.state,
            self.history,
            verdict,
            self.draining,
            self.cfg.unhealthy_after,
            status,
        )
        self.history = decision.history
        if decision.state != self.state or decision.reason != self.reason:
            if decision.state != self.state:
                self.log.info(
                    "state",
                    old=self.state.value,
                    new=decision.state.value,
                    probe=self.probe_note,
                    reason=decision.reason,
                )
            elif decision.reason is not None:
                self.log.warning("state_reason", state=self.state.value, reason=decision.reason)
            self.state = decision.state
            self.reason = decision.reason
            self.dirty.set()
        for s in NodeState:
            self.metrics.state.labels(state=s.value).set(1 if s is self.state else 0)

    async def _probe_once(self) -> None:
        if self.cfg.probe != "sip":
            self._decide(None)
            return
        result = await probe(
            self.uri.host, self.uri.port, self.uri.transport, self.cfg.probe_timeout
        )
        # From here on nothing awaits: decide from the state as it is now.
        status = result.status
        if result.rtt_ms is not None:
            self.metrics.probe_rtt.set(result.rtt_ms / 1000)
        self.probe_note = f"{status}" if status is not None else (result.error or "no answer")
        verdict = classify(status, result.error)
        if verdict is not ProbeVerdict.ALIVE and verdict is not ProbeVerdict.SHUTTING_DOWN:
            self.metrics.probe_failures.inc()
        self._decide(verdict, status)

    async def _count_once(self) -> int | None:
        """Read the call count (and why it is unknown, and the Asterisk
        version) into the record; say so once when the count goes or returns."""
        calls = await self.counter.active_calls()
        error = None if calls is not None else (self.counter.last_error or "no count yet")
        version = self.counter.version
        if error != self.calls_error:
            if error is not None:
                self.log.warning("call_count_unavailable", reason=error)
                self.metrics.count_errors.inc()
            else:
                self.log.info("call_count_available", active_calls=calls)
        if (calls, error, version) != (self.active_calls, self.calls_error, self.asterisk_version):
            self.active_calls, self.calls_error, self.asterisk_version = calls, error, version
            self.dirty.set()
        self.metrics.count_up.set(0 if calls is None else 1)
        if calls is not None:
            self.metrics.active_calls.set(calls)
        return calls

    async def probe_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._probe_once()
                await self._count_once()
            except Exception as exc:  # a probe bug must not kill the agent
                self.log.error("probe_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.cfg.probe_interval)

    async def etcd_loop(self) -> None:
        """Keep the record written and the lease alive, through outages."""
        keepalive_every = max(self.cfg.ttl / 3, 0.5)
        backoff = 0.2
        next_keepalive = 0.0
        while not self.stopping.is_set():
            try:
                if self.lease is not None and time.monotonic() >= next_keepalive:
                    ttl = await self.etcd.keepalive(self.lease)
                    next_keepalive = time.monotonic() + keepalive_every
                    if ttl <= 0:
                        self.log.warning("lease_expired", lease=hex(self.lease))
                        self.lost_because = f"the lease {self.lease:x} expired"
                        self.lease = None
                    elif self.written is not None:
                        await self._check_record()
                self.dirty.clear()
                await self._write()
                self.metrics.etcd_up.set(1)
                backoff = 0.2
            except NodeIdTaken as exc:
                if not self.registered:
                    self.conflict = exc
                    self.stopping.set()
                    return
                # Our record vanished and another agent took the id meanwhile:
                # say so once, keep trying (the other one may be short-lived).
                if str(exc) != self.last_conflict:
                    self.log.error("node_id_taken", error=str(exc))
                self.last_conflict = str(exc)
                self.written = None
                await self._sleep(keepalive_every)
                continue
            except (EtcdUnavailable, aetcd.exceptions.ClientError) as exc:
                self.metrics.etcd_up.set(0)
                if backoff == 0.2:  # first failure: say it once, then quietly retry
                    self.log.warning("etcd_unavailable", error=str(exc))
                # Keep the lease id: if etcd returns before it expires, the
                # keep-alive above finds it alive and nothing is lost.
                next_keepalive = 0.0
                self.written = None
                await self._sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            wait = max(0.0, next_keepalive - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), wait)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # -- drain ---------------------------------------------------------------

    async def _balancers_applied(self, revision: int) -> bool:
        snap = await self.etcd.get_prefix(self.ks.balancers)
        for kv in snap.items:
            try:
                status = parse_balancer(kv.key, kv.value)
            except RecordError:
                continue
            if status.revision < revision:
                return False
        return True

    async def drain(self) -> bool:
        """Stop taking calls, wait for the balancers and for the calls."""
        deadline = time.monotonic() + self.cfg.drain_timeout
        self.draining = True
        self._decide(None)
        self.log.info("draining", timeout=self.cfg.drain_timeout)
        with contextlib.suppress(EtcdUnavailable):
            await self._write()
        revision = self.last_revision
        # No call may land here once we leave: wait for every balancer to
        # have applied a snapshot that includes our draining state.
        while time.monotonic() < deadline:
            try:
                if await self._balancers_applied(revision):
                    break
            except EtcdUnavailable:
                pass
            await asyncio.sleep(0.05)
        waited_for_calls = False
        applied_at = time.monotonic()
        said_no_count = False
        while time.monotonic() < deadline:
            calls = await self._count_once()
            if calls is None and not said_no_count:
                said_no_count = True
                self.log.warning(
                    "drain_without_count",
                    reason=self.calls_error,
                    waits=f"the drain timeout ({self.cfg.drain_timeout:g}s)",
                )
            with contextlib.suppress(EtcdUnavailable):
                await self._write()
            if calls == 0 and time.monotonic() - applied_at >= self.cfg.drain_settle:
                waited_for_calls = True
                break
            await asyncio.sleep(0.2)
        self.log.info(
            "drained" if waited_for_calls else "drain_timeout",
            active_calls=self.active_calls,
        )
        return waited_for_calls

    async def stop_asterisk(self) -> bool:
        """``core stop gracefully`` over the agent's AMI session (--on-idle
        stop); whether Asterisk accepted it. Needs write=command."""
        if not isinstance(self.counter, AmiCounter):
            self.log.error("asterisk_not_stopped", reason="--on-idle stop needs --calls ami://")
            return False
        try:
            ok, lines = await self.counter.session.command("core stop gracefully")
        except (AmiError, OSError, TimeoutError) as exc:
            ok, lines = False, [str(exc) or type(exc).__name__]
        if ok:
            self.log.info("asterisk_stop_requested", command="core stop gracefully")
        else:
            self.log.error("asterisk_not_stopped", reason="; ".join(lines))
        return ok

    # -- node exec ------------------------------------------------------------

    async def exec_loop(self) -> None:
        """Run `asterfleet node exec` requests for this node over AMI."""
        prefix = self.ks.execs_of(self.cfg.node_id)
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                snap = await self.etcd.get_prefix(prefix)
                for kv in snap.items:
                    await self._run_exec(kv.key, kv.value)
                async with self.etcd.watch_prefix(prefix, snap.revision + 1) as queue:
                    backoff = 0.5
                    while not self.stopping.is_set():
                        item = await queue.get()
                        if isinstance(item, WatchLost):
                            raise EtcdUnavailable(str(item))
                        if item.kind == "put":
                            await self._run_exec(item.key, item.value)
            except EtcdUnavailable:
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _run_exec(self, key: str, raw: bytes) -> None:
        try:
            req = ExecRequest.model_validate_json(raw)
        except ValueError:
            return
        if req.state != "pending" or time.time() - req.at > EXEC_MAX_AGE:
            return
        if not isinstance(self.counter, AmiCounter):
            ok, lines = False, ["this node's agent has no AMI session (run it with --calls ami://)"]
        else:
            try:
                ok, lines = await self.counter.session.command(req.command)
            except (AmiError, OSError, TimeoutError) as exc:
                ok, lines = False, [str(exc) or type(exc).__name__]
        self.log.info("exec", command=req.command, by=req.by, at=req.at, ok=ok)
        done = req.model_copy(
            update={
                "state": "done" if ok else "refused",
                "ok": ok,
                "output": lines,
                "done_at": time.time(),
            }
        )
        with contextlib.suppress(EtcdUnavailable):
            await self.etcd.put(key, exec_json(done))

    async def deregister(self) -> None:
        if self.lease is not None:
            with contextlib.suppress(EtcdUnavailable):
                await self.etcd.revoke(self.lease)
            self.log.info("deregistered", lease=hex(self.lease))
            self.lease = None

    # -- main ----------------------------------------------------------------

    async def run(self, shutdown: asyncio.Event) -> int:
        """Run until ``shutdown`` is set, then drain and deregister.

        Raises :class:`NodeIdTaken` when another live agent holds the id.
        """
        self.log.info("starting", sip_uri=self.cfg.sip_uri, etcd=self.cfg.etcd, ttl=self.cfg.ttl)
        loops = {
            "counter": lambda: self.counter.run(self.stopping),
            "probe": self.probe_loop,
            "etcd": self.etcd_loop,
            "exec": self.exec_loop,
        }
        tasks = [
            asyncio.create_task(supervise(name, loop, self.stopping, self.log), name=name)
            for name, loop in loops.items()
        ]
        stop = asyncio.create_task(_wait(self.stopping))
        signalled = asyncio.create_task(_wait(shutdown))
        try:
            await asyncio.wait({stop, signalled}, return_when=asyncio.FIRST_COMPLETED)
            if self.conflict is not None:
                self.log.error("node_id_taken", error=str(self.conflict))
                raise self.conflict
            if self.registered:
                # Probing goes on during the drain so the record stays truthful.
                idle = await self.drain()
                if idle and self.cfg.on_idle == "stop":
                    await self.stop_asterisk()
            else:
                # Never registered: no balancer routes here, nothing to drain.
                self.log.info("stopping_unregistered", why="the record was never written")
        finally:
            self.stopping.set()
            await cancel_all([*tasks, stop, signalled])
            await self.deregister()
            await self.etcd.close()
        return 0
