"""Keep a running box's configuration in step with the fleet (``asterisk config --follow``).

A box renders its configuration once at start; what an operator then changes
is the set of load balancers (one added, one moved to a new address) and
their own dialplan (a ConfigMap updated in place). The follower runs beside
Asterisk in the same container: it watches the balancers' records in etcd,
renders the configuration again when their published SIP addresses change,
writes only the files whose text changed, copies the dialplan in again when
its text changed, and reloads the module that reads each one through
Asterisk's own control socket (``asterisk -rx "module reload res_pjsip.so"``,
which applies a changed ``identify`` at once; ``pbx_config.so`` for the
dialplan; checked against Asterisk 22.10.1). Settings that come from the
container's environment (the AMI secret, the capture server) change only
with a new container.

Why here and not from the node agent over AMI: the files live in the
Asterisk container, and AMI's ``Reload`` action needs the ``system`` or
``config`` privilege (which also allow restarting Asterisk or rewriting any
configuration file); the agent's AMI user keeps ``read=call,write=reporting``.

The pure part decides (:func:`follow_addresses`, :func:`plan`); the loop at
the end does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from asterfleet import logs
from asterfleet.asterisk.boxconf import (
    SECRET_FILES,
    BoxConfig,
    balancer_addresses,
    render_box_config,
)
from asterfleet.errors import AsterfleetError, RecordError
from asterfleet.etcd_client import (
    NO_SECURITY,
    Etcd,
    EtcdSecurity,
    KeyValue,
    WatchEvent,
    WatchLost,
)
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import BalancerStatus, parse_balancer

# What Asterisk reloads to read each file again. Any other file (asterisk.conf
# and modules.conf above all) is read at start: a change there needs a restart.
RELOAD_MODULE: Mapping[str, str] = {
    "pjsip.conf": "res_pjsip.so",
    "manager.conf": "manager",
    "extensions.conf": "pbx_config.so",
    "rtp.conf": "res_rtp_asterisk.so",
    "logger.conf": "logger",
    "hep.conf": "res_hep.so",
}


# manager.conf holds the AMI secret.
@dataclass(frozen=True)
class Plan:
    """What a new render means for a running box."""

    write: tuple[str, ...]  # files whose text changed (or that are missing)
    reload: tuple[str, ...]  # modules to reload, in file order
    restart: tuple[str, ...]  # changed files Asterisk reads only at start


def plan(current: Mapping[str, str | None], wanted: Mapping[str, str]) -> Plan:
    """Compare the files on disk (None: missing) with a new render."""
    write = tuple(name for name, text in wanted.items() if current.get(name) != text)
    reload: list[str] = []
    for name in write:
        module = RELOAD_MODULE.get(name)
        if module is not None and module not in reload:
            reload.append(module)
    restart = tuple(name for name in write if name not in RELOAD_MODULE)
    return Plan(write, tuple(reload), restart)


def follow_addresses(
    current: tuple[str, ...], published: tuple[str, ...]
) -> tuple[str, ...] | None:
    """The balancer addresses to render now, or None to keep the current ones.

    No published address at all is a fleet without balancers for a moment
    (all restarting, etcd records expired): refusing every call then gains
    nothing, so the last known addresses stay.
    """
    if not published or published == current:
        return None
    return published


def read_files(directory: Path, names: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = (directory / name).read_text()
        except FileNotFoundError:
            out[name] = None
    return out


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Write each file atomically (a reload never reads half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o640 if name in SECRET_FILES else 0o644)
        os.replace(tmp, path)


def reload_argv(asterisk: str, config_dir: str, module: str) -> list[str]:
    return [asterisk, "-C", f"{config_dir}/asterisk.conf", "-rx", f"module reload {module}"]


def reload_module(asterisk: str, config_dir: str, module: str) -> str | None:
    """Reload one module through the control socket; None, or why it failed."""
    try:
        done = subprocess.run(
            reload_argv(asterisk, config_dir, module),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    text = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or "reloaded successfully" not in text:
        return text.splitlines()[-1] if text else f"exit code {done.returncode}"
    return None


Reloader = Callable[[str], str | None]


class FollowMetrics:
    """What the follower did (served with --follow-metrics-listen)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.changes = Counter(
            "asterfleet_box_config_changes",
            "Changes written into the running box's configuration, by what changed",
            ["what"],
            registry=r,
        )
        self.reloads = Counter(
            "asterfleet_box_config_reloads",
            "Module reloads through Asterisk's control socket, by module and result",
            ["module", "result"],
            registry=r,
        )
        self.pending = Gauge(
            "asterfleet_box_config_reloads_pending",
            "Reloads that failed and are retried (Asterisk not up yet, or refusing)",
            registry=r,
        )
        self.balancers = Gauge(
            "asterfleet_box_config_balancers",
            "Load balancer addresses pjsip.conf identifies",
            registry=r,
        )


@dataclass
class Follower:
    """Re-render ``cfg`` into ``target`` whenever the balancers' addresses change,
    and copy the operator's dialplan in again whenever it changes."""

    cfg: BoxConfig
    target: Path
    reloader: Reloader
    debounce: float = 0.5
    log: structlog.typing.FilteringBoundLogger = dataclasses.field(
        default_factory=lambda: logs.get("asterisk.follow")
    )
    pending: list[str] = dataclasses.field(default_factory=list)  # reloads that failed
    metrics: FollowMetrics = dataclasses.field(default_factory=FollowMetrics)
    # The operator's dialplan as mounted (a ConfigMap): copied in again and
    # reloaded when its text changes, checked every ``tick`` seconds.
    dialplan_source: Path | None = None
    tick: float = 2.0
    _dialplan_error: str | None = None

    def apply(self, published: tuple[str, ...]) -> None:
        """One step: render for ``published`` and reload what changed."""
        addresses = follow_addresses(self.cfg.balancers, published)
        if addresses is None and not published:
            self.log.warning("no_balancer_address", keeping=",".join(self.cfg.balancers))
        if addresses is not None:
            old = self.cfg.balancers
            self.cfg = dataclasses.replace(self.cfg, balancers=addresses)
            files = render_box_config(self.cfg)
            step = plan(read_files(self.target, list(files)), files)
            write_files(self.target, {n: files[n] for n in step.write})
            self.log.info(
                "balancers_changed",
                old=",".join(old),
                new=",".join(addresses),
                written=",".join(step.write),
            )
            if step.restart:
                self.log.warning("restart_needed", files=",".join(step.restart))
            self.metrics.changes.labels("balancers").inc()
            self.pending += [m for m in step.reload if m not in self.pending]
        self.metrics.balancers.set(len(self.cfg.balancers))
        self.reload_pending()

    def check_dialplan(self) -> None:
        """Copy the operator's dialplan in when it changed; reload pbx_config."""
        if self.dialplan_source is None:
            return
        try:
            text = self.dialplan_source.read_text()
        except OSError as exc:
            if self._dialplan_error != str(exc):  # once per change, keep the last copy
                self.log.warning(
                    "dialplan_unreadable", path=str(self.dialplan_source), error=str(exc)
                )
                self._dialplan_error = str(exc)
            return
        self._dialplan_error = None
        name = self.cfg.dialplan_file
        if read_files(self.target, [name])[name] == text:
            return
        write_files(self.target, {name: text})
        self.log.info("dialplan_changed", path=str(self.dialplan_source), written=name)
        self.metrics.changes.labels("dialplan").inc()
        if RELOAD_MODULE["extensions.conf"] not in self.pending:
            self.pending.append(RELOAD_MODULE["extensions.conf"])

    def reload_pending(self) -> None:
        still: list[str] = []
        for module in self.pending:
            error = self.reloader(module)
            if error is None:
                self.log.info("module_reloaded", module=module)
                self.metrics.reloads.labels(module, "ok").inc()
            else:
                self.log.warning("module_reload_failed", module=module, error=error)
                self.metrics.reloads.labels(module, "failed").inc()
                still.append(module)
        self.pending = still
        self.metrics.pending.set(len(still))

    async def run(
        self,
        endpoints: str,
        cluster: str,
        stopping: asyncio.Event,
        security: EtcdSecurity = NO_SECURITY,
    ) -> None:
        """Watch the balancers' records until ``stopping``; reconnect on any loss."""
        ks = Keyspace(cluster)
        backoff = 0.5
        while not stopping.is_set():
            try:
                async with Etcd(endpoints, security=security) as client:
                    snap = await client.get_prefix(ks.balancers)
                    self.apply(_published(snap.items))
                    backoff = 0.5
                    async with client.watch_prefix(ks.balancers, snap.revision + 1) as queue:
                        await self._follow_watch(client, ks, queue, stopping)
            except (AsterfleetError, WatchLost, OSError) as exc:
                self.log.warning("etcd_unavailable", error=str(exc), retry_in=backoff)
                self.check_dialplan()
                self.reload_pending()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), backoff)
                backoff = min(backoff * 2, 10.0)

    async def _follow_watch(
        self,
        client: Etcd,
        ks: Keyspace,
        queue: asyncio.Queue[WatchEvent | WatchLost],
        stopping: asyncio.Event,
    ) -> None:
        # Balancers rewrite their records often (a heartbeat): the dialplan
        # check and reload retries run on a clock, not when the watch is idle.
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick
        while not stopping.is_set():
            timed = bool(self.pending) or self.dialplan_source is not None
            wait = max(0.0, next_tick - loop.time()) if timed else None
            got = await _next(queue, stopping, wait)
            if isinstance(got, WatchLost):
                raise got
            if got is not None:
                # Several records change together (a balancer restarting):
                # settle, then read them all once.
                await asyncio.sleep(self.debounce)
                while not queue.empty():
                    if isinstance(queue.get_nowait(), WatchLost):
                        raise WatchLost("the watch ended")
                snap = await client.get_prefix(ks.balancers)
                self.apply(_published(snap.items))
            if timed and loop.time() >= next_tick:
                self.check_dialplan()
                self.reload_pending()
                next_tick = loop.time() + self.tick


def _published(items: Sequence[KeyValue]) -> tuple[str, ...]:
    records: list[BalancerStatus] = []
    for kv in items:
        try:
            records.append(parse_balancer(kv.key, kv.value))
        except RecordError:
            continue  # a record another version wrote: not ours to judge here
    return balancer_addresses(records)


async def _next(
    queue: asyncio.Queue[WatchEvent | WatchLost], stopping: asyncio.Event, timeout: float | None
) -> WatchEvent | WatchLost | None:
    """The next queue item; None when ``stopping`` is set or ``timeout`` passed."""
    get = asyncio.ensure_future(queue.get())
    stop = asyncio.ensure_future(stopping.wait())
    done, pending = await asyncio.wait({get, stop}, timeout=timeout, return_when="FIRST_COMPLETED")
    for task in pending:
        task.cancel()
    return get.result() if get in done else None
