"""The balancer agent: a level-triggered reconcile loop.

desired state (etcd) -> rendered dispatcher.list -> applied state (Kamailio)

Events only wake the loop; every pass renders from the full in-memory
snapshot, so a missed or repeated event cannot leave the list wrong. An
etcd outage keeps the last list and Kamailio as they are; a Kamailio
restart is detected (RPC failure or uptime going back) and the list is
re-applied.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from asterfleet import __version__, logs
from asterfleet.balancer.drift import drift
from asterfleet.balancer.listfile import read_text, write_atomic
from asterfleet.errors import EtcdUnavailable, RpcError
from asterfleet.etcd_client import NO_SECURITY, Etcd, EtcdSecurity, WatchLost
from asterfleet.fleet.dispatcher_list import (
    Algorithm,
    Destination,
    list_hash,
    plan,
    render,
    weight_overflow,
)
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import BalancerStatus, EffectiveState
from asterfleet.fleet.view import Parsed, parse_item, parse_snapshot, remove_item
from asterfleet.kamailio.rpc import KamailioRpc
from asterfleet.runtime.tasks import cancel_all, supervise

#: Quiet seconds in a row with a write under the prefix newer than the last
#: applied revision before the watch is declared lost and the prefix re-read.
WATCH_BEHIND_CHECKS = 2


@dataclass
class BalancerConfig:
    etcd: str
    cluster: str
    balancer_id: str
    list_file: Path
    rpc: str
    etcd_security: EtcdSecurity = NO_SECURITY
    algorithm: Algorithm = Algorithm.WEIGHT
    # The HEP capture id of its Kamailio, published in the status record.
    capture_id: int | None = None
    ttl: int = 5
    kamailio_check_interval: float = 0.5
    status_interval: float = 1.0
    # At most one apply per interval. Kamailio 5.6's dispatcher frees the
    # list two reloads back while probes, RPC and routing may still read it
    # (it crashed under 20-30 reloads/s in our benchmark), and each pass
    # renders the whole fleet. A change after a quiet spell still goes out
    # at once; changes during the pause are folded into the next pass.
    min_apply_interval: float = 0.1
    # How often Kamailio's in-memory dispatcher state is compared with the
    # rendered list (also right after each apply); 0 turns the check off.
    kamailio_reconcile_interval: float = 2.0
    # The Kamailio's SIP address(es), published in the status record.
    sip_addresses: tuple[str, ...] = ()
    # The virtual IP the balancers share (an address): when set, whether this
    # host holds it is exported (asterfleet_balancer_vip_held) every
    # vip_check_interval seconds.
    vip: str | None = None
    vip_check_interval: float = 0.5


class BalancerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconciles = Counter("asterfleet_balancer_reconciles", "Reconcile passes", registry=r)
        self.applies = Counter(
            "asterfleet_balancer_applies", "Lists written and reloaded", registry=r
        )
        self.apply_latency = Gauge(
            "asterfleet_balancer_last_apply_seconds",
            "Write + reload time of the last apply",
            registry=r,
        )
        self.apply_hist = Histogram(
            "asterfleet_balancer_apply_seconds",
            "Write + reload time",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.nodes = Gauge(
            "asterfleet_balancer_nodes", "Nodes by effective state", ["state"], registry=r
        )
        self.reload_failures = Counter(
            "asterfleet_balancer_reload_failures", "Failed dispatcher.reload calls", registry=r
        )
        self.write_failures = Counter(
            "asterfleet_balancer_write_failures", "Failed list file writes", registry=r
        )
        self.etcd_up = Gauge(
            "asterfleet_balancer_etcd_connected", "1 when the etcd watch is live", registry=r
        )
        self.kamailio_up = Gauge(
            "asterfleet_balancer_kamailio_up", "1 when Kamailio answers RPC", registry=r
        )
        self.kamailio_restarts = Counter(
            "asterfleet_balancer_kamailio_restarts", "Kamailio restarts detected", registry=r
        )
        self.bad_records = Gauge(
            "asterfleet_balancer_bad_records", "Records skipped as invalid", registry=r
        )
        self.events = Counter("asterfleet_balancer_watch_events", "etcd watch events", registry=r)
        self.revision = Gauge(
            "asterfleet_balancer_revision", "etcd revision of the snapshot applied", registry=r
        )
        self.vip_held = Gauge(
            "asterfleet_balancer_vip_held",
            "1 when the virtual IP is on this balancer's interfaces, else 0 (summed over the "
            "balancers of one VIP it must be 1)",
            ["vip"],
            registry=r,
        )
        self.corrections = Counter(
            "asterfleet_balancer_kamailio_corrections",
            "Drift in Kamailio's dispatcher state corrected (kind: set_state or reload)",
            ["kind"],
            registry=r,
        )


class BalancerAgent:
    def __init__(self, cfg: BalancerConfig, metrics: BalancerMetrics | None = None) -> None:
        self.cfg = cfg
        self.ks = Keyspace(cfg.cluster)
        self.etcd = Etcd(cfg.etcd, security=cfg.etcd_security)
        self.rpc = KamailioRpc(cfg.rpc, timeout=2.0)
        self.metrics = metrics or BalancerMetrics()
        self.log = logs.get("balancer", balancer=cfg.balancer_id, cluster=cfg.cluster)
        self.parsed = Parsed()
        self.synced = False  # a full snapshot has been read at least once
        self.revision = 0  # of the last snapshot/event seen
        self.applied_revision = 0
        self.file_text: str | None = read_text(cfg.list_file)
        self.applied_text: str | None = None  # what Kamailio has loaded, as far as we know
        self.last_error: str | None = None
        self.last_reload_ok = True
        self.last_reload_at = 0.0
        self.kamailio_pid: int | None = None
        self.kamailio_alive = False
        self.wake = asyncio.Event()
        self.status_dirty = asyncio.Event()
        self.stopping = asyncio.Event()
        self.reported_problems: set[str] = set()
        self.dests: list[Destination] = []
        # What Kamailio was last told to load: drift is measured against this,
        # never against a rendering that could not be written or reloaded.
        self.applied_dests: list[Destination] = []
        self.lease: int | None = None
        self.apply_lock = asyncio.Lock()

    # -- the reconcile pass ---------------------------------------------------

    def desired(self) -> tuple[list[Destination], str]:
        dests = plan(self.parsed.nodes.values(), self.parsed.intents, self.cfg.algorithm)
        return dests, render(dests, self.cfg.algorithm)

    async def reconcile(self) -> None:
        """One pass; safe to run any number of times."""
        async with self.apply_lock:
            applied = await self._reconcile()
        if applied and self.cfg.kamailio_reconcile_interval > 0:
            await self.check_kamailio()

    async def _reconcile(self) -> bool:
        """Render, write, reload; whether Kamailio holds the rendered list."""
        if not self.synced:
            return False  # never render from a partial view: keep what is there
        self.metrics.reconciles.inc()
        revision = self.revision
        dests, text = self.desired()
        self.dests = dests
        self._report_problems()
        started = time.perf_counter()
        if text != self.file_text:
            try:
                write_atomic(self.cfg.list_file, text)
                self.file_text = text
            except OSError as exc:
                self.metrics.write_failures.inc()
                self._error(f"cannot write {self.cfg.list_file}: {exc.strerror or exc}")
                return False
        if text != self.applied_text:
            try:
                await self.rpc.dispatcher_reload()
            except RpcError as exc:
                self.metrics.reload_failures.inc()
                self.last_reload_ok = False
                self._error(f"dispatcher.reload failed: {exc}")
                return False
            elapsed = time.perf_counter() - started
            self.applied_text = text
            self.applied_dests = dests
            self.last_reload_ok = True
            self.last_reload_at = time.time()
            self.metrics.applies.inc()
            self.metrics.apply_latency.set(elapsed)
            self.metrics.apply_hist.observe(elapsed)
            self.log.info(
                "applied",
                revision=revision,
                nodes=len(dests),
                routable=sum(d.routable for d in dests),
                hash=list_hash(text),
                ms=round(elapsed * 1000, 2),
            )
            self.status_dirty.set()
        if self.last_error is not None:
            self.log.info("recovered", was=self.last_error)
            self.last_error = None
            self.status_dirty.set()
        if revision != self.applied_revision:
            self.applied_revision = revision
            self.metrics.revision.set(revision)
        counts = collections.Counter(d.state for d in dests)
        for state in EffectiveState:
            self.metrics.nodes.labels(state=state.value).set(counts[state])
        return True

    async def check_kamailio(self) -> None:
        """Compare what Kamailio holds with the rendered list; correct drift.

        The file is the truth, but Kamailio's in-memory state can move away
        from it (a failure route or an operator's ``dispatcher.set_state`` on
        a disabled destination makes it probe, then take calls). Each
        correction is logged and counted.
        """
        async with self.apply_lock:
            if self.applied_text is None or self.applied_text != self.file_text:
                return  # nothing applied yet, or an apply is pending
            try:
                held = await self.rpc.dispatcher_list()
            except RpcError as exc:
                self._error(f"dispatcher.list failed: {exc}")
                return
            found = drift(self.applied_dests, held)
            if found.none:
                return
            try:
                if found.reload_because is not None:
                    self.log.warning("kamailio_drift", fix="reload", why=found.reload_because)
                    await self.rpc.dispatcher_reload()
                    self.metrics.corrections.labels(kind="reload").inc()
                    return
                for fix in found.fixes:
                    self.log.warning(
                        "kamailio_drift",
                        fix="set_state",
                        node=fix.node_id,
                        uri=fix.uri,
                        held=fix.held,
                        state=fix.state,
                    )
                    await self.rpc.call("dispatcher.set_state", fix.state, fix.set_id, fix.uri)
                    self.metrics.corrections.labels(kind="set_state").inc()
            except RpcError as exc:
                self._error(f"correcting Kamailio's dispatcher state failed: {exc}")

    async def drift_loop(self) -> None:
        if self.cfg.kamailio_reconcile_interval <= 0:
            return
        while not self.stopping.is_set():
            await self._sleep(self.cfg.kamailio_reconcile_interval)
            try:
                await self.check_kamailio()
            except Exception as exc:  # a bug in one check must not stop the loop
                self.log.exception("drift_check_crashed", error=repr(exc))

    def _error(self, message: str) -> None:
        if message != self.last_error:
            self.log.error("apply_failed", error=message)
            self.status_dirty.set()
        self.last_error = message

    def _report_problems(self) -> None:
        """Log each new problem once: bad records, sets too big for weights."""
        records = set(self.parsed.problems.values())
        fleet = set(weight_overflow(self.dests, self.cfg.algorithm))
        for problem in sorted(records - self.reported_problems):
            self.log.warning("bad_record_skipped", problem=problem)
        for problem in sorted(fleet - self.reported_problems):
            self.log.warning("fleet_warning", problem=problem)
        self.reported_problems = records | fleet
        self.metrics.bad_records.set(len(records))

    async def reconcile_loop(self) -> None:
        last_pass = 0.0
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                # The timeout retries a failed write or reload.
                await asyncio.wait_for(self.wake.wait(), 1.0)
            pause = self.cfg.min_apply_interval - (time.monotonic() - last_pass)
            if pause > 0:
                await self._sleep(pause)
            self.wake.clear()
            last_pass = time.monotonic()
            try:
                await self.reconcile()
            except Exception as exc:  # a bug in one pass must not stop the loop
                self.log.exception("reconcile_crashed", error=repr(exc))

    # -- etcd ----------------------------------------------------------------

    def _apply_event(self, kind: str, key: str, value: bytes, revision: int) -> bool:
        """Fold one event into the snapshot; whether the list may change."""
        self.revision = max(self.revision, revision)
        self.metrics.events.inc()
        kind_id = self.ks.kind_of(key)
        if kind_id is None:
            return False
        if kind == "put":
            parse_item(self.ks, key, value, self.parsed)
        else:
            remove_item(self.ks, key, self.parsed)
        return kind_id[0] != "balancers"

    async def etcd_loop(self) -> None:
        backoff = 0.2
        while not self.stopping.is_set():
            try:
                snap = await self.etcd.get_prefix(self.ks.prefix)
                self.parsed = parse_snapshot(self.ks, snap.items)
                self.revision = snap.revision
                self.synced = True
                self.metrics.etcd_up.set(1)
                self.log.info("synced", revision=snap.revision, nodes=len(self.parsed.nodes))
                self.wake.set()
                self.status_dirty.set()
                backoff = 0.2
                behind = 0
                async with self.etcd.watch_prefix(self.ks.prefix, snap.revision + 1) as queue:
                    while not self.stopping.is_set():
                        try:
                            item = await asyncio.wait_for(queue.get(), 1.0)
                        except TimeoutError:
                            # A quiet watch may be a dead one: a stream that
                            # ended without an error, or one left on a member
                            # that lost its leader (seen once after an etcd
                            # member was killed: 26 s of writes never came).
                            # A write newer than what we applied, still
                            # missing a second later, means a full re-read.
                            listed = await self.etcd.keys_under(self.ks.prefix)
                            newest = max((rev for _, rev in listed), default=0)
                            missing = [
                                key
                                for key, _ in listed
                                if (kind := self.ks.kind_of(key)) is not None
                                and kind[0] == "nodes"
                                and kind[1] not in self.parsed.nodes
                                and key not in self.parsed.problems
                            ]
                            late = newest > self.revision or bool(missing)
                            behind = behind + 1 if late else 0
                            if behind >= WATCH_BEHIND_CHECKS:
                                raise EtcdUnavailable(
                                    f"the watch missed writes (newest {newest}, applied "
                                    f"up to {self.revision}, nodes not seen: {len(missing)})"
                                ) from None
                            continue
                        behind = 0
                        changed = False
                        while True:
                            if isinstance(item, WatchLost):
                                raise EtcdUnavailable(str(item))
                            changed |= self._apply_event(
                                item.kind, item.key, item.value, item.mod_revision
                            )
                            try:
                                item = queue.get_nowait()
                            except asyncio.QueueEmpty:
                                break
                        if changed:
                            self.wake.set()
            except EtcdUnavailable as exc:
                # Keep the last applied list: an outage must never empty
                # the balancer. Resync from a full read when etcd is back.
                self.metrics.etcd_up.set(0)
                if backoff == 0.2:  # first failure: say it once, then quietly retry
                    self.log.warning("etcd_unavailable", error=str(exc))
                await self._sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # -- the virtual IP -----------------------------------------------------------

    async def vip_loop(self) -> None:
        """Export whether the VIP is here; a change is logged (the VIP moved)."""
        vip = self.cfg.vip
        if vip is None:
            return
        from asterfleet.vip.holder import holds

        gauge = self.metrics.vip_held.labels(vip=vip)
        held: bool | None = None
        failed: str | None = None
        while not self.stopping.is_set():
            try:
                now = holds(vip)
            except OSError as exc:
                if str(exc) != failed:  # logged once, not every half second
                    self.log.warning("vip_check_failed", vip=vip, error=str(exc))
                    failed = str(exc)
            else:
                failed = None
                gauge.set(1 if now else 0)
                if now != held:
                    self.log.info("vip_held" if now else "vip_not_held", vip=vip)
                    held = now
            await self._sleep(self.cfg.vip_check_interval)

    # -- Kamailio ---------------------------------------------------------------

    async def kamailio_loop(self) -> None:
        """Notice a Kamailio restart (a new main pid) and re-apply the list."""
        while not self.stopping.is_set():
            try:
                pid = await self.rpc.main_pid()
                if pid != self.kamailio_pid:
                    if self.kamailio_pid is not None:
                        self.metrics.kamailio_restarts.inc()
                        self.log.info("kamailio_restarted", pid=pid)
                    self.kamailio_pid = pid
                    self.kamailio_alive = True
                    self.metrics.kamailio_up.set(1)
                    # Kamailio loaded whatever the file held at its start:
                    # re-read it (someone may have replaced it) and reload.
                    self.file_text = read_text(self.cfg.list_file)
                    self.applied_text = None
                    self.wake.set()
            except RpcError as exc:
                if self.kamailio_alive:
                    self.log.warning("kamailio_unreachable", error=str(exc))
                self.kamailio_alive = False
                self.metrics.kamailio_up.set(0)
            await self._sleep(self.cfg.kamailio_check_interval)

    # -- status -----------------------------------------------------------------

    def status(self) -> BalancerStatus:
        return BalancerStatus(
            id=self.cfg.balancer_id,
            revision=self.applied_revision,
            list_hash=list_hash(self.applied_text) if self.applied_text else "",
            nodes=len(self.dests),
            routable=sum(d.routable for d in self.dests),
            last_reload_ok=self.last_reload_ok,
            last_reload_at=self.last_reload_at,
            last_error=self.last_error,
            algorithm=self.cfg.algorithm.value,
            agent_version=__version__,
            sip_addresses=self.cfg.sip_addresses,
            capture_id=self.cfg.capture_id,
            updated_at=time.time(),
        )

    async def status_loop(self) -> None:
        """Publish our applied state under our lease.

        Published at once when the applied list changes, otherwise at most
        every ``status_interval`` so churn does not double etcd's load.
        """
        keepalive_every = max(self.cfg.ttl / 3, 0.5)
        last_sent: tuple[object, ...] | None = None
        last_keepalive = 0.0
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.status_dirty.wait(), self.cfg.status_interval)
            self.status_dirty.clear()
            status = self.status()
            key_fields = (
                status.revision,
                status.list_hash,
                status.last_error,
                status.last_reload_ok,
                status.nodes,
            )
            try:
                if self.lease is None:
                    self.lease = await self.etcd.grant(self.cfg.ttl)
                    last_sent = None
                elif time.monotonic() - last_keepalive >= keepalive_every:
                    if await self.etcd.keepalive(self.lease) <= 0:
                        self.lease = await self.etcd.grant(self.cfg.ttl)
                        last_sent = None
                    last_keepalive = time.monotonic()
                if key_fields != last_sent and self.synced:
                    await self.etcd.put(
                        self.ks.balancer(self.cfg.balancer_id), status.to_json(), lease=self.lease
                    )
                    last_sent = key_fields
            except EtcdUnavailable:
                last_sent = None
                await self._sleep(0.5)

    # -- main ---------------------------------------------------------------------

    async def run(self, shutdown: asyncio.Event) -> int:
        self.log.info(
            "starting",
            list_file=str(self.cfg.list_file),
            rpc=self.cfg.rpc,
            algorithm=self.cfg.algorithm.value,
            etcd=self.cfg.etcd,
        )
        loops = {
            "etcd": self.etcd_loop,
            "reconcile": self.reconcile_loop,
            "kamailio": self.kamailio_loop,
            "status": self.status_loop,
            "drift": self.drift_loop,
            "vip": self.vip_loop,
        }
        tasks = [
            asyncio.create_task(supervise(name, loop, self.stopping, self.log), name=name)
            for name, loop in loops.items()
        ]
        try:
            await shutdown.wait()
        finally:
            self.stopping.set()
            await cancel_all(tasks)
            if self.lease is not None:
                with contextlib.suppress(EtcdUnavailable):
                    await self.etcd.revoke(self.lease)
            await self.etcd.close()
            await self.rpc.close()
            self.log.info("stopped")
        return 0
