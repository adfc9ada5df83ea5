"""How fast does `asterfleet` start, and how much memory do its agents keep?

Measures, for one or both ways of installing the package:

1. ``asterfleet --version``: wall time (median, min, max) and CPU time;
2. ``asterfleet fleet ls --json`` against a local etcd holding 10 nodes;
3. ``asterfleet node run``: from the process start to its record in etcd
   (an etcd watch sees the put), for ``--joins`` new nodes one after another;
4. the RSS of the 10 node agents and of the balancer agent after
   ``--minutes`` (default 5) with 10 nodes (etcd, Kamailio, the balancer
   agent, 10 SIPp boxes each with its node agent, all on loopback).

The two ways of installing (``--install``):

* ``source``: what the README does (``pip install -e``) on a machine with
  ``PYTHONDONTWRITEBYTECODE=1``: no ``.pyc`` is ever written, so every start
  compiles every asterfleet module it imports. Dependencies in site-packages
  are compiled by pip either way.
* ``compiled``: a normal install, ``.pyc`` files present (``compileall``).

Both run a copy of ``--src`` (default: this checkout's ``src/``) through
``PYTHONPATH`` with this virtualenv's interpreter, so the same script also
measures an older tree (``git archive REV src | tar -x -C DIR``, then
``--src DIR/src``) for before/after figures. Commands run as
``python -m asterfleet …``, as the lab starts its agents.

Wall times use hyperfine when it is installed (Debian's ``hyperfine``), else
``--runs`` plain runs. On a busy machine the wall time includes waiting for a
core: the CPU time (user + system) is the figure that load does not inflate.

    .venv/bin/python bench/cli_startup.py                   # both installs, RSS after 5 min
    .venv/bin/python bench/cli_startup.py --minutes 1 --install compiled

Targets (issue 9): ``--version`` and ``fleet ls`` median <= 0.3 s; each
agent <= 60 MB RSS; ``node run`` to record <= 0.5 s. Exit code 0 when every
target is met for the ``compiled`` install (or the only one measured), else 1.
Raw figures go to bench/results/cli_startup-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from asterfleet.etcd_client import Etcd, WatchEvent
from asterfleet.fleet.keys import Keyspace
from asterfleet.lab.stack import Stack, StackOptions
from asterfleet.runtime.process import ManagedProcess, wait_for

ROOT = Path(__file__).resolve().parent.parent
NODES = 10

TARGET_START_S = 0.3
TARGET_RSS_MB = 60.0
TARGET_JOIN_S = 0.5


# -- one install --------------------------------------------------------------------


def prepare(src: Path, into: Path, compiled: bool) -> dict[str, str]:
    """A copy of ``src/asterfleet`` under ``into``; the environment that runs it."""
    shutil.copytree(
        src / "asterfleet", into / "asterfleet", ignore=shutil.ignore_patterns("__pycache__")
    )
    if compiled:
        ok = compileall.compile_dir(into / "asterfleet", quiet=1, workers=0)
        if not ok:
            raise SystemExit(f"compileall failed in {into}")
    env = {"PYTHONPATH": str(into), "PYTHONDONTWRITEBYTECODE": "1"}
    return env


def asterfleet(*args: str) -> list[str]:
    return [sys.executable, "-m", "asterfleet", *args]


def timed_runs(argv: Sequence[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    """Wall (median, min, max) and CPU (user+sys mean) of ``runs`` runs, after 2 warm-ups."""
    full_env = {**os.environ, **env}
    hyperfine = shutil.which("hyperfine")
    if hyperfine:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [
                    hyperfine,
                    "-N",
                    "--warmup",
                    "2",
                    "--runs",
                    str(runs),
                    "--export-json",
                    out.name,
                    "--style",
                    "none",
                    " ".join(_quote(a) for a in argv),
                ],
                env=full_env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            result = json.loads(Path(out.name).read_text())["results"][0]
        times = result["times"]
        cpu = result["user"] + result["system"]
        tool = "hyperfine"
    else:
        times = []
        cpus = []
        for i in range(runs + 2):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(argv, env=full_env, check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i >= 2:
                times.append(wall)
                cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        cpu = statistics.mean(cpus)
        tool = "repeated runs"
    return {
        "tool": tool,
        "runs": len(times),
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "cpu_s": round(cpu, 3),
    }


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=,@" for c in arg) else repr(arg)


async def join_times(
    stack: Stack, env: dict[str, str], work: Path, joins: int, sip_uri: str
) -> list[float]:
    """Seconds from starting `node run` to its record's put in etcd, per join."""
    ks = Keyspace(stack.options.cluster)
    samples = []
    async with Etcd(stack.etcd_endpoint) as etcd:
        for i in range(joins):
            node_id = f"join{i}"
            snap = await etcd.get_prefix(ks.nodes)
            async with etcd.watch_prefix(ks.node(node_id), snap.revision + 1) as events:
                agent = ManagedProcess(
                    node_id,
                    asterfleet(
                        "node",
                        "run",
                        "--etcd",
                        stack.etcd_endpoint,
                        "--cluster",
                        stack.options.cluster,
                        "--id",
                        node_id,
                        "--sip-uri",
                        sip_uri,
                    ),
                    work / f"{node_id}.log",
                    env=env,
                )
                t0 = time.perf_counter()
                agent.start()
                try:
                    while True:
                        event = await asyncio.wait_for(events.get(), 30)
                        if isinstance(event, WatchEvent) and event.kind == "put":
                            samples.append(time.perf_counter() - t0)
                            break
                        if not isinstance(event, WatchEvent):
                            raise SystemExit(f"etcd watch lost: {event}")
                finally:
                    agent.stop(grace=5)
    return samples


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def measure(install: str, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"cli-startup-{install}-"))
    try:
        env = prepare(src, work / "site", compiled=install == "compiled")
        out: dict[str, Any] = {"install": install}
        print(f"[{install}] asterfleet --version …", flush=True)
        out["version"] = timed_runs(asterfleet("--version"), env, args.runs)

        # The stack's agents run this install too.
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        stack = Stack(work / "stack", StackOptions(cluster="bench", log_level="warning"))
        try:
            print(f"[{install}] starting etcd, Kamailio, the balancer and {NODES} nodes …")
            stack.start(nodes=NODES)
            wait_for(
                lambda: len(stack.dispatcher()) == NODES, 300, what=f"{NODES} nodes in Kamailio"
            )
            started = time.monotonic()
            print(f"[{install}] asterfleet fleet ls --json …", flush=True)
            ls = asterfleet(
                "fleet", "ls", "--json", "--etcd", stack.etcd_endpoint, "--cluster", "bench"
            )
            listed = json.loads(subprocess.run(ls, check=True, capture_output=True).stdout)
            assert len(listed["nodes"]) == NODES, f"fleet ls listed {listed}, not {NODES} nodes"
            out["fleet_ls"] = timed_runs(ls, env, args.runs)

            print(f"[{install}] node run -> record in etcd, {args.joins} joins …", flush=True)
            first = next(iter(stack.nodes.values()))
            joins = asyncio.run(join_times(stack, env, work, args.joins, first.sip_uri))
            out["node_join"] = {
                "runs": len(joins),
                "median_s": round(statistics.median(joins), 3),
                "min_s": round(min(joins), 3),
                "max_s": round(max(joins), 3),
            }

            left = args.minutes * 60 - (time.monotonic() - started)
            print(f"[{install}] RSS after {args.minutes} min: waiting {max(0, left):.0f} s …")
            time.sleep(max(0.0, left))
            agents = [rss_mb(n.agent.pid) for n in stack.nodes.values()]
            assert stack.balancer is not None
            out["rss_mb"] = {
                "after_minutes": args.minutes,
                "node_agent_max": round(max(agents), 1),
                "node_agent_median": round(statistics.median(agents), 1),
                "balancer": round(rss_mb(stack.balancer.pid), 1),
            }
        finally:
            stack.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def verdict(result: dict[str, Any]) -> list[str]:
    missed = []
    for what in ("version", "fleet_ls"):
        if result[what]["median_s"] > TARGET_START_S:
            missed.append(f"{what} median {result[what]['median_s']} s > {TARGET_START_S} s")
    rss = result["rss_mb"]
    for what in ("node_agent_max", "balancer"):
        if rss[what] > TARGET_RSS_MB:
            missed.append(f"{what} RSS {rss[what]} MB > {TARGET_RSS_MB} MB")
    if result["node_join"]["median_s"] > TARGET_JOIN_S:
        missed.append(f"node join median {result['node_join']['median_s']} s > {TARGET_JOIN_S} s")
    return missed


def table(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        "| install | what | median s | min s | max s | CPU s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for what, label in (
            ("version", "`asterfleet --version`"),
            ("fleet_ls", "`fleet ls --json` (10 nodes)"),
            ("node_join", "`node run` start -> record in etcd"),
        ):
            f = r[what]
            cpu = f.get("cpu_s", "")
            rows.append(
                f"| {r['install']} | {label} | {f['median_s']} | {f['min_s']} "
                f"| {f['max_s']} | {cpu} |"
            )
    rows.append("")
    rows.append("| install | after min | node agent RSS MB (max / median) | balancer RSS MB |")
    rows.append("|---|---:|---:|---:|")
    for r in results:
        m = r["rss_mb"]
        rows.append(
            f"| {r['install']} | {m['after_minutes']} | {m['node_agent_max']} / "
            f"{m['node_agent_median']} | {m['balancer']} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", choices=("source", "compiled", "both"), default="both")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the tree to measure")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per command")
    parser.add_argument("--joins", type=int, default=10, help="node run joins to time")
    parser.add_argument(
        "--minutes", type=float, default=5.0, help="how long the 10 nodes run before RSS"
    )
    args = parser.parse_args()
    installs = ("source", "compiled") if args.install == "both" else (args.install,)
    load = os.getloadavg()
    results = [measure(install, args.src.resolve(), args) for install in installs]
    print()
    print(f"load average at start: {load[0]:.1f} on {os.cpu_count()} cores")
    print(table(results))
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"cli_startup-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"load_average": load, "results": results}, indent=2))
    print(f"\nraw figures: {path}")
    judged = next((r for r in results if r["install"] == "compiled"), results[0])
    missed = verdict(judged)
    for line in missed:
        print(f"target missed ({judged['install']}): {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
