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
from asterfleet.errors import EtcdUnavailable, RecordError
from asterfleet.etcd_client import Etcd
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, NodeState, parse_balancer
from asterfleet.node.calls import CallCounter, NoCounter
from asterfleet.node.state import ProbeHistory, next_state
from asterfleet.runtime.tasks import cancel_all
from asterfleet.sip.options import parse_sip_uri, probe


@dataclass
class NodeAgentConfig:
    etcd: str
    cluster: str
    node_id: str
    sip_uri: str
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


class NodeAgent:
    def __init__(
        self,
        cfg: NodeAgentConfig,
        counter: CallCounter | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.ks = Keyspace(cfg.cluster)
        self.etcd = Etcd(cfg.etcd)
        self.counter = counter or NoCounter()
        self.metrics = metrics or NodeMetrics()
        self.log = logs.get("node", node=cfg.node_id, cluster=cfg.cluster)
        self.uri = parse_sip_uri(cfg.sip_uri)
        self.started_at = time.time()
        self.state = NodeState.STARTING if cfg.probe == "sip" else NodeState.ACTIVE
        self.history = ProbeHistory()
        self.active_calls: int | None = None
        self.probe_note: str | None = None
        self.draining = False
        self.lease: int | None = None
        self.written: bytes | None = None  # record content last written (sans timestamps)
        self.last_revision = 0
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
        )

    async def _write(self) -> None:
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
        self.last_revision = await self.etcd.put(
            self.ks.node(self.cfg.node_id), stamped.to_json(), lease=self.lease
        )
        self.written = content
        self.metrics.writes.inc()

    # -- loops ----------------------------------------------------------------

    async def _probe_once(self) -> None:
        status: int | None = None
        if self.cfg.probe == "sip":
            result = await probe(
                self.uri.host, self.uri.port, self.uri.transport, self.cfg.probe_timeout
            )
            status = result.status
            if result.rtt_ms is not None:
                self.metrics.probe_rtt.set(result.rtt_ms / 1000)
            self.probe_note = f"{status}" if status is not None else (result.error or "no answer")
        new_state, self.history = next_state(
            self.history, status, self.cfg.probe == "sip", self.draining, self.cfg.unhealthy_after
        )
        if self.history.failures:
            self.metrics.probe_failures.inc()
        calls = await self.counter.active_calls()
        if new_state != self.state:
            self.log.info("state", old=self.state.value, new=new_state.value, probe=self.probe_note)
        if new_state != self.state or calls != self.active_calls:
            self.state = new_state
            self.active_calls = calls
            self.dirty.set()
        for s in NodeState:
            self.metrics.state.labels(state=s.value).set(1 if s is self.state else 0)
        if calls is not None:
            self.metrics.active_calls.set(calls)

    async def probe_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._probe_once()
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
                        self.lease = None
                self.dirty.clear()
                await self._write()
                self.metrics.etcd_up.set(1)
                backoff = 0.2
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

    async def drain(self) -> None:
        """Stop taking calls, wait for the balancers and for the calls."""
        deadline = time.monotonic() + self.cfg.drain_timeout
        self.draining = True
        self.state = NodeState.DRAINING
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
        while time.monotonic() < deadline:
            calls = await self.counter.active_calls()
            self.active_calls = calls
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

    async def deregister(self) -> None:
        if self.lease is not None:
            with contextlib.suppress(EtcdUnavailable):
                await self.etcd.revoke(self.lease)
            self.log.info("deregistered", lease=hex(self.lease))
            self.lease = None

    # -- main ----------------------------------------------------------------

    async def run(self, shutdown: asyncio.Event) -> int:
        """Run until ``shutdown`` is set, then drain and deregister."""
        self.log.info("starting", sip_uri=self.cfg.sip_uri, etcd=self.cfg.etcd, ttl=self.cfg.ttl)
        tasks = [
            asyncio.create_task(self.probe_loop(), name="probe"),
            asyncio.create_task(self.etcd_loop(), name="etcd"),
        ]
        try:
            await shutdown.wait()
            # Probing goes on during the drain so the record stays truthful.
            await self.drain()
        finally:
            self.stopping.set()
            await cancel_all(tasks)
            await self.deregister()
            await self.etcd.close()
        return 0
