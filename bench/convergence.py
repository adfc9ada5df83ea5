"""How fast does a node record written in etcd reach Kamailio's dispatcher?

Starts etcd, one Kamailio load balancer and its balancer agent (`asterfleet
balancer run`) on loopback, in a temporary directory. No node agents: the
benchmark writes node records itself, under a lease, in state `active`.

1. At rest: ``--trials`` times, write one new node record (a unique loopback
   SIP URI nothing listens on) and poll Kamailio's ``dispatcher.list`` in a
   tight loop until the URI is listed; then delete it and poll until it is
   gone. Latency = from just before the etcd put to the reply of the first
   listing that shows the change.
2. Under churn: register ``--nodes`` background nodes, then, while a
   background task changes one of them ``--churn-rate`` times a second
   (weight, state active <-> draining, delete / re-add), repeat the same
   trials.
3. CPU: the balancer's utime+stime over the churn trials as a percentage of
   one core (/proc/PID/stat), with Kamailio's whole process group, etcd and
   this process for context.

Also measured: Kamailio's own ``dispatcher.reload`` time with the small list
and with the full one, and the balancer pass's pure parts (plan + render of
the whole fleet, the atomic write) in this process.

``dispatcher.list`` is read over JSON-RPC on HTTP (xhttp), not the datagram
socket: with 1,000 destinations the reply is ~0.5 MB and Kamailio cannot
send it as one datagram ("Message too long"). The balancer itself still
reloads over the datagram socket.

    .venv/bin/python bench/convergence.py               # full: 200 trials, 1,000 nodes
    .venv/bin/python bench/convergence.py --quick       # smoke run, ~1 minute

Writes raw samples and summaries to bench/results/convergence-<time>.json.
Exit code 0 when every target is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# gRPC's C core logs "too_many_pings" GOAWAYs from etcd on stderr; keep the
# table readable (the balancer's own resyncs are counted from its log).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import httpx
from prometheus_client.parser import text_string_to_metric_families

from asterfleet.balancer.listfile import write_atomic
from asterfleet.etcd_client import Etcd
from asterfleet.fleet.dispatcher_list import Algorithm, plan, render
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, NodeState
from asterfleet.kamailio.rpc import KamailioRpc, parse_dispatcher_list
from asterfleet.lab.stack import Stack, StackOptions
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import wait_for

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: Targets from issue 2.
TARGET_REST_P99_MS = 100.0
TARGET_CHURN_P99_MS = 250.0
TARGET_BALANCER_CPU_PCT = 20.0

#: The probe nodes live alone in set 1; background nodes fill sets 2, 3, ...
PROBE_SET = 1


# -- measurements -------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of non-empty ``samples``."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: Sequence[float]) -> dict[str, float | int]:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": round(percentile(samples, 50), 2),
        "p95": round(percentile(samples, 95), 2),
        "p99": round(percentile(samples, 99), 2),
        "max": round(max(samples), 2),
        "mean": round(sum(samples) / len(samples), 2),
    }


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the given live processes, in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def group_pids(pgid: int) -> list[int]:
    """Every live process in process group ``pgid`` (Kamailio forks its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


@dataclass
class CpuMeter:
    """CPU seconds of named process sets between two readings."""

    sets: dict[str, list[int]]
    start: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0

    def begin(self) -> None:
        self.start = {name: cpu_seconds(pids) for name, pids in self.sets.items()}
        self.start["bench"] = sum(os.times()[:2])
        self.started_at = time.perf_counter()

    def end(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started_at
        now = {name: cpu_seconds(pids) for name, pids in self.sets.items()}
        now["bench"] = sum(os.times()[:2])
        out: dict[str, Any] = {"wall_s": round(wall, 2)}
        for name, value in now.items():
            used = value - self.start[name]
            out[name] = {"cpu_s": round(used, 2), "pct_of_one_core": round(100 * used / wall, 1)}
        return out


class KamailioGone(Exception):
    """Kamailio stopped answering dispatcher.list (it crashed or hung)."""


class ListPoller:
    """``dispatcher.list`` over HTTP; presence is checked on the raw reply text."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = httpx.AsyncClient(timeout=5.0)
        self.body = json.dumps({"jsonrpc": "2.0", "method": "dispatcher.list", "id": 1})

    async def text(self) -> str:
        try:
            reply = await self.client.post(
                self.url, content=self.body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise KamailioGone(f"dispatcher.list over HTTP failed: {exc!r}") from exc
        return reply.text

    async def destinations(self) -> int:
        reply = json.loads(await self.text())
        if "result" not in reply:
            return 0  # "No Destination Sets"
        return len(parse_dispatcher_list(reply["result"]))

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class Trial:
    add_ms: float | None  # None: not listed within the timeout
    remove_ms: float | None
    put_ms: float
    add_polls: int
    # How long the listing that showed the node took: the resolution.
    add_poll_ms: float


def probe_uri(phase: int, index: int) -> str:
    # 127.78.0.0/16 for probes, 127.77.0.0/16 for background: unique, and
    # nothing listens there (Kamailio's OPTIONS probes just time out).
    return f"sip:127.{78 + phase}.{index // 250}.{index % 250 + 1}:5060;transport=udp"


def background_uri(index: int) -> str:
    return f"sip:127.77.{index // 250}.{index % 250 + 1}:5060;transport=udp"


async def until(
    poller: ListPoller, needle: str, present: bool, deadline: float, gap: float
) -> tuple[float | None, int, float]:
    """Poll until ``needle`` is (or is not) in the listing.

    Returns (time the deciding reply arrived or None, polls, that poll's ms).
    """
    polls = 0
    while True:
        sent = time.perf_counter()
        text = await poller.text()
        got = time.perf_counter()
        polls += 1
        if (needle in text) == present:
            return got, polls, (got - sent) * 1000
        if got > deadline:
            return None, polls, (got - sent) * 1000
        await asyncio.sleep(gap)


async def run_trials(
    etcd: Etcd,
    poller: ListPoller,
    ks: Keyspace,
    lease: int,
    phase: int,
    trials: int,
    timeout: float,
    gap: float,
    label: str,
    min_seconds: float = 0.0,
    failures: list[str] | None = None,
    settle: float = 0.0,
) -> list[Trial]:
    """At least ``trials`` trials, and more until ``min_seconds`` have passed.

    ``settle`` is a quiet time before each write. At rest it must exceed the
    balancer's --min-apply-interval, or each trial would measure the pacing
    of the trial before it rather than a single change on a quiet fleet.
    """
    out: list[Trial] = []
    began = time.perf_counter()
    i = -1
    while True:
        i += 1
        if i >= trials and time.perf_counter() - began >= min_seconds:
            break
        node_id = f"probe{phase}-{i}"
        uri = probe_uri(phase, i)
        needle = f'"{uri}"'
        record = NodeRecord(
            id=node_id, set=PROBE_SET, sip_uri=uri, state=NodeState.ACTIVE, weight=1
        ).to_json()
        key = ks.node(node_id)
        if settle:
            await asyncio.sleep(settle)
        t0 = time.perf_counter()
        await etcd.put(key, record, lease=lease)
        put_ms = (time.perf_counter() - t0) * 1000
        try:
            seen, polls, poll_ms = await until(poller, needle, True, t0 + timeout, gap)
            if settle:
                await asyncio.sleep(settle)
            t1 = time.perf_counter()
            await etcd.delete(key)
            gone, _, _ = await until(poller, needle, False, t1 + timeout, gap)
        except KamailioGone as exc:
            message = f"{label} trial {i + 1}: {exc}"
            print(f"  ABORTED {message}", flush=True)
            if failures is None:
                raise
            failures.append(message)
            return out
        trial = Trial(
            add_ms=None if seen is None else (seen - t0) * 1000,
            remove_ms=None if gone is None else (gone - t1) * 1000,
            put_ms=put_ms,
            add_polls=polls,
            add_poll_ms=poll_ms,
        )
        out.append(trial)
        if (i + 1) % 50 == 0:
            adds = [t.add_ms for t in out if t.add_ms is not None]
            p99 = f"{percentile(adds, 99):.1f}" if adds else "-"
            print(f"  {label}: {i + 1} trials, add p99 so far {p99} ms", flush=True)
        # A little jitter so trials do not phase-lock with the agent's timers.
        await asyncio.sleep(random.uniform(0.005, 0.03))
    return out


def trial_summary(trials: list[Trial]) -> dict[str, Any]:
    adds = [t.add_ms for t in trials if t.add_ms is not None]
    removes = [t.remove_ms for t in trials if t.remove_ms is not None]
    return {
        "add_ms": summary(adds),
        "remove_ms": summary(removes),
        "etcd_put_ms": summary([t.put_ms for t in trials]),
        "listing_rtt_ms": summary([t.add_poll_ms for t in trials]),
        "timeouts": sum(t.add_ms is None for t in trials)
        + sum(t.remove_ms is None for t in trials),
    }


# -- background fleet and churn ---------------------------------------------------


@dataclass
class Fleet:
    """The background nodes this process wrote, as it last wrote them."""

    ks: Keyspace
    lease: int
    per_set: int
    #: ACTIVE: probed by Kamailio (flags 8); DRAINING: disabled, never probed (flags 4).
    state: NodeState = NodeState.ACTIVE
    records: dict[str, NodeRecord] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def make(self, index: int) -> NodeRecord:
        return NodeRecord(
            id=f"bg{index}",
            set=PROBE_SET + 1 + (index // self.per_set if self.per_set else 0),
            sip_uri=background_uri(index),
            state=self.state,
            weight=1,
        )

    async def register(self, etcd: Etcd, count: int, batch: int = 50) -> None:
        for start in range(0, count, batch):
            recs = [self.make(i) for i in range(start, min(count, start + batch))]
            await asyncio.gather(
                *(etcd.put(self.ks.node(r.id), r.to_json(), lease=self.lease) for r in recs)
            )
            self.records.update((r.id, r) for r in recs)


@dataclass
class ChurnStats:
    changes: int = 0
    weight: int = 0
    state: int = 0
    delete: int = 0
    readd: int = 0
    late_resets: int = 0
    started_at: float = 0.0
    stopped_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        wall = max(self.stopped_at - self.started_at, 1e-9)
        return {
            "changes": self.changes,
            "achieved_per_s": round(self.changes / wall, 1),
            "weight_changes": self.weight,
            "state_flips": self.state,
            "deletes": self.delete,
            "re_adds": self.readd,
            "schedule_resets": self.late_resets,
        }


async def churn(
    etcd: Etcd, fleet: Fleet, rate: float, stop: asyncio.Event, stats: ChurnStats, limit: float
) -> None:
    """One change every 1/rate s on an absolute schedule, until ``stop`` or ``limit`` s."""
    rng = random.Random(7)
    interval = 1.0 / rate
    stats.started_at = time.perf_counter()
    next_at = stats.started_at
    ids = sorted(fleet.records)
    while not stop.is_set() and time.perf_counter() - stats.started_at < limit:
        roll = rng.random()
        if fleet.deleted and roll < 0.1:
            node_id = rng.choice(sorted(fleet.deleted))
            fleet.deleted.discard(node_id)
            rec = fleet.records[node_id]
            await etcd.put(fleet.ks.node(node_id), rec.to_json(), lease=fleet.lease)
            stats.readd += 1
        else:
            node_id = rng.choice(ids)
            if node_id in fleet.deleted:
                continue
            rec = fleet.records[node_id]
            if roll < 0.2:
                await etcd.delete(fleet.ks.node(node_id))
                fleet.deleted.add(node_id)
                stats.delete += 1
            else:
                if roll < 0.6:
                    rec = rec.model_copy(update={"weight": rng.randint(1, 10)})
                    stats.weight += 1
                else:
                    # Flip between two states; with draining background nodes
                    # stay disabled (not probed): draining <-> unhealthy.
                    other = (
                        NodeState.ACTIVE if fleet.state is NodeState.ACTIVE else NodeState.UNHEALTHY
                    )
                    flipped = NodeState.DRAINING if rec.state is other else other
                    rec = rec.model_copy(update={"state": flipped})
                    stats.state += 1
                fleet.records[node_id] = rec
                await etcd.put(fleet.ks.node(node_id), rec.to_json(), lease=fleet.lease)
        stats.changes += 1
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay < -1.0:  # fell a second behind (etcd stalled): do not burst
            next_at = time.perf_counter()
            stats.late_resets += 1
        elif delay > 0:
            await asyncio.sleep(delay)
    stats.stopped_at = time.perf_counter()


async def keep_lease(etcd: Etcd, lease: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5.0)
        if not stop.is_set():
            await etcd.keepalive(lease)


# -- reload and render costs --------------------------------------------------------


async def reload_cost(rpc: KamailioRpc, samples: int) -> dict[str, float | int]:
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await rpc.dispatcher_reload()
        times.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.01)
    return summary(times)


def render_cost(fleet: Fleet, work_dir: Path, samples: int = 20) -> dict[str, Any]:
    """The pure part of one balancer pass over the whole fleet, and the file write."""
    nodes = list(fleet.records.values())
    plan_ms, render_ms, write_ms = [], [], []
    path = work_dir / "render-cost.list"
    for _ in range(samples):
        t0 = time.perf_counter()
        dests = plan(nodes, {}, Algorithm.WEIGHT)
        t1 = time.perf_counter()
        text = render(dests, Algorithm.WEIGHT)
        t2 = time.perf_counter()
        write_atomic(path, text)
        t3 = time.perf_counter()
        plan_ms.append((t1 - t0) * 1000)
        render_ms.append((t2 - t1) * 1000)
        write_ms.append((t3 - t2) * 1000)
    return {
        "nodes": len(nodes),
        "plan_ms": summary(plan_ms),
        "render_ms": summary(render_ms),
        "write_atomic_ms": summary(write_ms),
    }


# -- balancer observations ---------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """Counters and histogram sums of the balancer's /metrics."""
    out: dict[str, float] = {}
    text = httpx.get(url, timeout=2.0).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_total", "_sum", "_count")) and not sample.labels:
                out[sample.name] = sample.value
    return out


def metric_delta(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, Any]:
    def d(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    applies = d("asterfleet_balancer_applies_total")
    return {
        "reconciles": int(d("asterfleet_balancer_reconciles_total")),
        "applies": int(applies),
        "applies_per_s": round(applies / wall, 1),
        "watch_events": int(d("asterfleet_balancer_watch_events_total")),
        "mean_apply_ms": round(1000 * d("asterfleet_balancer_apply_seconds_sum") / applies, 2)
        if applies
        else None,
        "reload_failures": int(d("asterfleet_balancer_reload_failures_total")),
    }


def log_events(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            for event in (
                "synced",
                "etcd_unavailable",
                "reconcile_crashed",
                "apply_failed",
                "kamailio_restarted",
            ):
                if f"event='{event}'" in line:
                    counts[event] = counts.get(event, 0) + 1
    return counts


# -- the run ----------------------------------------------------------------------------


@dataclass
class Options:
    trials: int
    nodes: int
    churn_rate: float
    per_set: int
    poll_ms: float
    timeout: float
    reload_samples: int
    churn_seconds: float
    background_state: str
    shm_mb: int
    out_dir: Path
    keep: bool


async def measure(stack: Stack, opts: Options, metrics_url: str) -> dict[str, Any]:
    assert stack.kamailio is not None and stack.balancer is not None
    url = stack.kamailio.http_rpc_url
    assert url is not None
    ks = Keyspace(CLUSTER)
    gap = opts.poll_ms / 1000
    results: dict[str, Any] = {}
    etcd = Etcd(stack.etcd_endpoint)
    churn_etcd = Etcd(stack.etcd_endpoint)
    poller = ListPoller(url)
    rpc = KamailioRpc(stack.rpc_target, timeout=5.0)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        lease = await etcd.grant(30)
        tasks.append(asyncio.create_task(keep_lease(etcd, lease, stop)))
        # The balancer publishes balancers/<id> once it has synced and applied.
        for _ in range(200):
            if await etcd.get(ks.balancer("lb1")) is not None:
                break
            await asyncio.sleep(0.05)
        results["shm_start"] = await rpc.call("core.shmmem")

        print(f"at rest: {opts.trials} trials (+5 warm-up)", flush=True)
        await run_trials(etcd, poller, ks, lease, 9, 5, opts.timeout, gap, "warm-up")
        results["reload_small"] = await reload_cost(rpc, opts.reload_samples)
        rest = await run_trials(
            etcd, poller, ks, lease, 0, opts.trials, opts.timeout, gap, "rest", settle=0.15
        )
        results["rest"] = {"summary": trial_summary(rest), "samples": [vars(t) for t in rest]}

        print(f"registering {opts.nodes} background nodes", flush=True)
        fleet = Fleet(ks, lease, opts.per_set, NodeState(opts.background_state))
        t0 = time.perf_counter()
        await fleet.register(etcd, opts.nodes)
        deadline = time.perf_counter() + 60
        listed = 0
        while time.perf_counter() < deadline:
            listed = await poller.destinations()
            if listed >= opts.nodes:
                break
            await asyncio.sleep(0.1)
        if listed < opts.nodes:
            raise RuntimeError(
                f"Kamailio lists {listed} of {opts.nodes} nodes after 60 s: "
                f"see {stack.work_dir / 'balancer.log'}"
            )
        results["register"] = {
            "nodes": opts.nodes,
            "seconds_to_all_listed": round(time.perf_counter() - t0, 2),
        }
        results["reload_full"] = await reload_cost(rpc, opts.reload_samples)
        results["render_cost"] = render_cost(fleet, stack.work_dir)
        list_sizes = [len(await poller.text()) for _ in range(3)]
        results["listing_bytes"] = max(list_sizes)

        print(f"under churn: {opts.churn_rate:g} changes/s, {opts.trials} trials", flush=True)
        stats = ChurnStats()
        limit = 30 + opts.churn_seconds + opts.trials * (2 * opts.timeout + 0.1)
        tasks.append(
            asyncio.create_task(churn(churn_etcd, fleet, opts.churn_rate, stop, stats, limit))
        )
        await asyncio.sleep(2.0)  # let the balancer reach its steady churn rhythm
        kamailio_pgid = stack.kamailio.process.pid if stack.kamailio.process else 0
        assert stack.etcd is not None and stack.etcd.process is not None
        meter = CpuMeter(
            {
                "balancer": [stack.balancer.pid],
                "kamailio": group_pids(kamailio_pgid),
                "etcd": [stack.etcd.process.pid],
            }
        )
        before = scrape(metrics_url)
        log_before = log_events(stack.work_dir / "balancer.log")
        meter.begin()
        failures: list[str] = []
        churned = await run_trials(
            etcd,
            poller,
            ks,
            lease,
            1,
            opts.trials,
            opts.timeout,
            gap,
            "churn",
            opts.churn_seconds,
            failures,
        )
        cpu = meter.end()
        after = scrape(metrics_url)
        log_after = log_events(stack.work_dir / "balancer.log")
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        results["churn"] = {
            "summary": trial_summary(churned),
            "churn": stats.as_dict(),
            "balancer": metric_delta(before, after, cpu["wall_s"]),
            "aborted": failures,
            "kamailio_alive": bool(group_pids(kamailio_pgid)),
            "balancer_log_events": {
                k: log_after.get(k, 0) - log_before.get(k, 0) for k in log_after
            },
            "samples": [vars(t) for t in churned],
        }
        results["cpu"] = cpu
        results["shm_end"] = None if failures else await rpc.call("core.shmmem")
        results["balancer_log_events_total"] = log_events(stack.work_dir / "balancer.log")
        return results
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await poller.close()
        await rpc.close()
        await etcd.close()
        await churn_etcd.close()


def targets(results: dict[str, Any]) -> list[tuple[str, float | None, float, bool]]:
    rest = results["rest"]["summary"]
    churn_s = results["churn"]["summary"]
    rest_p99 = rest["add_ms"].get("p99")
    churn_p99 = churn_s["add_ms"].get("p99")
    cpu = results["cpu"]["balancer"]["pct_of_one_core"]
    rows = [
        ("add p99 at rest (ms)", rest_p99, TARGET_REST_P99_MS),
        ("add p99 under churn (ms)", churn_p99, TARGET_CHURN_P99_MS),
        ("balancer CPU under churn (% core)", cpu, TARGET_BALANCER_CPU_PCT),
    ]
    out = []
    for name, value, limit in rows:
        timeouts = rest["timeouts"] if "rest" in name else churn_s["timeouts"]
        aborted = "rest" not in name and bool(results["churn"]["aborted"])
        ok = value is not None and value <= limit and (timeouts == 0 or "CPU" in name)
        ok = ok and not aborted
        out.append((name, value, limit, ok))
    return out


def print_report(results: dict[str, Any], opts: Options) -> None:
    def row(label: str, s: dict[str, Any]) -> str:
        if not s.get("n"):
            return f"  {label:<28} (no samples)"
        return (
            f"  {label:<28} {s['n']:>5} {s['p50']:>9.1f} {s['p95']:>9.1f} "
            f"{s['p99']:>9.1f} {s['max']:>9.1f}"
        )

    head = f"  {'':<28} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}"
    rest = results["rest"]["summary"]
    churn_s = results["churn"]["summary"]
    print()
    print(
        "write-to-Kamailio latency (etcd put -> dispatcher.list shows it), "
        f"poll every {opts.poll_ms:g} ms"
    )
    print(head)
    print(row("at rest: add", rest["add_ms"]))
    print(row("at rest: remove", rest["remove_ms"]))
    print(row(f"churn ({opts.nodes} nodes): add", churn_s["add_ms"]))
    print(row(f"churn ({opts.nodes} nodes): remove", churn_s["remove_ms"]))
    print(row("listing RTT at rest", rest["listing_rtt_ms"]))
    print(row("listing RTT under churn", churn_s["listing_rtt_ms"]))
    print(row("etcd put under churn", churn_s["etcd_put_ms"]))
    print(f"  timeouts ({opts.timeout:g} s): rest {rest['timeouts']}, churn {churn_s['timeouts']}")
    print()
    print("Kamailio dispatcher.reload (datagram RPC, as the balancer does it)")
    print(head)
    print(row("small list (probe only)", results["reload_small"]))
    print(row(f"{opts.nodes} destinations", results["reload_full"]))
    rc = results["render_cost"]
    print(
        f"  balancer pass, pure parts, {rc['nodes']} nodes: plan p50 {rc['plan_ms']['p50']} ms, "
        f"render p50 {rc['render_ms']['p50']} ms, "
        f"write_atomic p50 {rc['write_atomic_ms']['p50']} ms"
    )
    print()
    cpu = results["cpu"]
    ch = results["churn"]
    print(f"CPU over the churn trials ({cpu['wall_s']} s wall, % of one core)")
    for name in ("balancer", "kamailio", "etcd", "bench"):
        print(f"  {name:<10} {cpu[name]['cpu_s']:>7.2f} s  {cpu[name]['pct_of_one_core']:>6.1f} %")
    print(
        f"  churn achieved {ch['churn']['achieved_per_s']}/s; balancer applies "
        f"{ch['balancer']['applies_per_s']}/s, mean apply {ch['balancer']['mean_apply_ms']} ms, "
        f"log events {ch['balancer_log_events']}"
    )
    shm = results["shm_end"]
    if shm:
        print(
            f"  Kamailio shm: max used {shm['max_used'] / 2**20:.0f} of "
            f"{shm['total'] / 2**20:.0f} MB, listing {results['listing_bytes'] / 1024:.0f} kB"
        )
    if ch["aborted"]:
        print(f"  CHURN ABORTED: {ch['aborted'][0]}")
        print(f"  Kamailio still running: {ch['kamailio_alive']}")
    print()
    print("targets")
    for name, value, limit, ok in targets(results):
        shown = "-" if value is None else f"{value:.1f}"
        print(f"  {name:<36} {shown:>8}  <= {limit:g}  {'met' if ok else 'MISSED'}")


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        description="Latency from a node record's write in etcd to Kamailio's dispatcher.list, "
        "at rest and under churn, and the balancer's CPU.",
    )
    p.add_argument("--trials", type=int, default=200, help="trials per phase (default 200)")
    p.add_argument("--nodes", type=int, default=1000, help="background nodes (default 1000)")
    p.add_argument("--churn-rate", type=float, default=100.0, help="changes/s (default 100)")
    p.add_argument(
        "--per-set",
        type=int,
        default=100,
        help="background nodes per dispatcher set (default 100; 0 = all in one set). "
        "The weight normaliser refuses more than 100 live nodes in one set.",
    )
    p.add_argument("--poll-ms", type=float, default=2.0, help="pause between polls (default 2)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per add or remove")
    p.add_argument("--reload-samples", type=int, default=50)
    p.add_argument(
        "--background-state",
        choices=["active", "draining"],
        default="active",
        help="state of the background nodes (default active: Kamailio probes them; "
        "draining: disabled, not probed, churn flips draining <-> unhealthy)",
    )
    p.add_argument(
        "--churn-seconds",
        type=float,
        default=30.0,
        help="keep running churn trials at least this long, for a steady CPU reading "
        "(default 30; --quick 8)",
    )
    p.add_argument(
        "--kamailio-shm-mb",
        type=int,
        default=256,
        help="Kamailio -m (default 256; 0 = Kamailio's default 64). 1,000 unanswered "
        "OPTIONS probes a second exhaust 64 MB in seconds.",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 30 trials, 200 nodes")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    a = p.parse_args(argv)
    if a.quick:
        a.trials, a.nodes = min(a.trials, 30), min(a.nodes, 200)
        a.churn_seconds = min(a.churn_seconds, 8.0)
    if a.trials < 1 or a.nodes < 0 or a.churn_rate <= 0 or a.poll_ms < 0 or a.timeout <= 0:
        p.error("--trials >= 1, --nodes >= 0, --churn-rate > 0, --poll-ms >= 0, --timeout > 0")
    return Options(
        trials=a.trials,
        nodes=a.nodes,
        churn_rate=a.churn_rate,
        per_set=a.per_set,
        poll_ms=a.poll_ms,
        timeout=a.timeout,
        reload_samples=a.reload_samples,
        churn_seconds=a.churn_seconds,
        background_state=a.background_state,
        shm_mb=a.kamailio_shm_mb,
        out_dir=a.out,
        keep=a.keep,
    )


def environment() -> dict[str, Any]:
    kamailio = subprocess.run(["kamailio", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "kamailio": kamailio.stdout.splitlines()[0] if kamailio.stdout else None,
        "kernel": platform.release(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="af-conv-"))
    stack = Stack(
        work_dir,
        StackOptions(
            cluster=CLUSTER,
            log_level="info",
            kamailio_shm_mb=opts.shm_mb or None,
            rpc_http=True,
            kamailio_log_level="warning",
        ),
    )
    metrics_port = free_port()
    started = time.time()
    env = environment()
    try:
        stack.start_etcd()
        stack.start_kamailio()
        stack.start_balancer(extra=("--metrics-listen", f"127.0.0.1:{metrics_port}"))
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_for(lambda: _answers(metrics_url), 15, what="balancer metrics endpoint")
        results = asyncio.run(measure(stack, opts, metrics_url))
    finally:
        stack.stop()
        if not opts.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"work directory kept: {work_dir}")
    results["options"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    results["environment"] = env
    results["started_at"] = started
    results["targets"] = [
        {"name": n, "value": v, "limit": lim, "met": ok} for n, v, lim, ok in targets(results)
    ]
    print_report(results, opts)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    out = (
        opts.out_dir / f"convergence-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    )
    out.write_text(json.dumps(results, indent=1))
    print(f"\nraw results: {out}")
    return 0 if all(ok for *_, ok in targets(results)) else 1


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
