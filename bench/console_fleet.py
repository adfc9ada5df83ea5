#!/usr/bin/env python3
"""The Fleet page at fleet scale, measured in Chromium.

Starts a throwaway etcd and console on loopback, writes N node records the
way agents do, then in headless Chromium:

* loads /fleet ``--loads`` times (15): the load event (median), the console's part of
  it (request to first byte) and the HTML size of the first page;
* churns: C record changes a second (call counts and states of random
  nodes) for D seconds, while a PerformanceObserver collects main-thread
  long tasks (over 50 ms) and the page counts row replacements.

    .venv/bin/python bench/console_fleet.py --nodes 1000 --nodes 5000 --rate 100

Prints one JSON object per fleet size. Everything it started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from playwright.sync_api import sync_playwright

from asterfleet.console.process import start_console
from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import start_single
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, NodeState
from asterfleet.testing.chromium import launch, log_in

CLUSTER = "bench"
KS = Keyspace(CLUSTER)
PASSWORD = "bench-admin-pass"

LONGTASKS = """
window.__long = [];
new PerformanceObserver(list => {
  for (const e of list.getEntries()) window.__long.push(e.duration);
}).observe({type: "longtask", buffered: true});
"""


def record(i: int, calls: int, state: NodeState = NodeState.ACTIVE) -> NodeRecord:
    return NodeRecord(
        id=f"ast{i:05d}",
        set=1 + i % 4,
        sip_uri=f"sip:10.{i // 65536}.{i // 256 % 256}.{i % 256}:5060;transport=udp",
        state=state,
        weight=1 + i % 5,
        active_calls=calls,
        max_calls=200,
        labels={"rack": f"r{i % 20}", "zone": "a" if i % 2 else "b"},
        version="22.1.0",
        agent_version="0.1.0",
        started_at=time.time() - i,
        updated_at=time.time(),
        probe="200 OK",
    )


async def populate(endpoint: str, n: int) -> int:
    async with Etcd(endpoint, timeout=30.0) as etcd:
        lease = await etcd.grant(3600)
        sem = asyncio.Semaphore(16)

        async def put(i: int) -> None:
            async with sem:
                await etcd.put(KS.node(f"ast{i:05d}"), record(i, i % 7).to_json(), lease=lease)

        await asyncio.gather(*(put(i) for i in range(n)))
        return lease


def churn(
    endpoint: str, n: int, rate: float, seconds: float, lease: int, stop: threading.Event
) -> int:
    """``rate`` record changes a second for ``seconds``; half of them on the first page."""

    async def go() -> int:
        done = 0
        rng = random.Random(7)
        async with Etcd(endpoint, timeout=30.0) as etcd:
            start = time.monotonic()
            while not stop.is_set() and time.monotonic() - start < seconds:
                i = rng.randrange(50) if rng.random() < 0.5 else rng.randrange(n)
                state = NodeState.UNHEALTHY if rng.random() < 0.05 else NodeState.ACTIVE
                await etcd.put(
                    KS.node(f"ast{i:05d}"),
                    record(i, rng.randrange(30), state).to_json(),
                    lease=lease,
                )
                done += 1
                await asyncio.sleep(max(0.0, start + done / rate - time.monotonic()))
        return done

    return asyncio.run(go())


def measure(n: int, rate: float, seconds: float, loads_wanted: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="af-bench-console-"))
    etcd = start_single(work / "etcd")
    console = None
    try:
        lease = asyncio.run(populate(etcd.endpoint, n))
        console = start_console(
            work / "console.log", etcd=etcd.endpoint, db=str(work / "console.db"),
            cluster=CLUSTER, env={"ASTERFLEET_ADMIN_PASSWORD": PASSWORD}, timeout=120,
        )  # fmt: skip
        with sync_playwright() as p:
            browser = launch(p)
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.set_default_timeout(60_000)
                log_in(page, f"{console.url}/fleet", "admin", PASSWORD)
                page.wait_for_selector("#fleet-rows tr[data-node]")
                loads, sizes, servers = [], [], []
                for _ in range(loads_wanted):
                    page.goto(f"{console.url}/fleet", wait_until="load")
                    nav = page.evaluate(
                        "(() => { const e = performance.getEntriesByType('navigation')[0];"
                        " return [e.loadEventEnd - e.startTime, e.decodedBodySize,"
                        " e.responseStart - e.requestStart]; })()"
                    )
                    loads.append(nav[0])
                    sizes.append(nav[1])
                    servers.append(nav[2])
                page.add_init_script(LONGTASKS)
                page.goto(f"{console.url}/fleet")
                page.wait_for_selector("#live-status.on")
                page.evaluate(
                    """() => { window.__replaced = 0;
                       new MutationObserver(ms => ms.forEach(
                           m => { window.__replaced += m.addedNodes.length; }))
                         .observe(document.getElementById('fleet-rows'), {childList: true}); }"""
                )
                stop = threading.Event()
                # Its own thread: Playwright's sync API owns this thread's event loop.
                with ThreadPoolExecutor(1) as pool:
                    future = pool.submit(churn, etcd.endpoint, n, rate, seconds, lease, stop)
                    while not future.done():
                        page.wait_for_timeout(250)
                    changes = future.result()
                page.wait_for_timeout(1000)
                long_tasks = page.evaluate("window.__long")
                replaced = page.evaluate("window.__replaced")
            finally:
                browser.close()
        return {
            "nodes": n,
            "load_ms_median": round(statistics.median(loads), 1),
            "load_ms_all": [round(x, 1) for x in loads],
            # Of the load: the console's own time (request sent to the first
            # byte back): the rest is the browser's, and waiting for a core.
            "server_ms_median": round(statistics.median(servers), 1),
            "first_page_html_kb": round(statistics.median(sizes) / 1024, 1),
            "churn_changes": changes,
            "churn_seconds": seconds,
            "long_tasks_over_50ms": len(long_tasks),
            "longest_task_ms": round(max(long_tasks, default=0.0), 1),
            "rows_replaced": replaced,
        }
    finally:
        if console is not None:
            console.stop()
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, action="append", help="fleet size (repeatable)")
    parser.add_argument("--rate", type=float, default=100.0, help="record changes a second")
    parser.add_argument("--seconds", type=float, default=15.0, help="churn duration")
    parser.add_argument(
        "--loads", type=int, default=15, help="page loads timed (a busy machine needs many)"
    )
    args = parser.parse_args()
    print(json.dumps({"load_average": os.getloadavg()}), flush=True)
    for n in args.nodes or [1000, 5000]:
        print(json.dumps(measure(n, args.rate, args.seconds, args.loads)), flush=True)


if __name__ == "__main__":
    main()
