#!/usr/bin/env python3
"""Take docs/fleet.png: the console's Fleet page over a small sample fleet.

Starts a throwaway etcd and console on free loopback ports, writes node and
balancer records the way the agents do, logs in with headless Chromium and
saves the screenshot. Everything it started is stopped on exit.

    .venv/bin/python scripts/screenshot_console.py [--out docs/fleet.png]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import start_single
from asterfleet.fleet import actions
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import BalancerStatus, NodeRecord, NodeState
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in

CLUSTER = "lab"
PASSWORD = "screenshot-pass"

NODES = [
    ("ast-01", 1, NodeState.ACTIVE, 12, 50, "20.11.0", 3 * 86400 + 3600),
    ("ast-02", 1, NodeState.ACTIVE, 9, 50, "20.11.0", 3 * 86400 + 1200),
    ("ast-03", 1, NodeState.ACTIVE, 4, 50, "20.11.0", 5400),
    ("ast-04", 1, NodeState.UNHEALTHY, 0, 50, "20.10.1", 600),
    ("ast-05", 2, NodeState.STARTING, 0, 25, "21.6.0", 8),
]


async def populate(endpoint: str) -> None:
    ks = Keyspace(CLUSTER)
    now = time.time()
    async with Etcd(endpoint) as etcd:
        lease = await etcd.grant(600)
        for i, (node_id, set_id, state, calls, weight, version, age) in enumerate(NODES):
            rec = NodeRecord(
                id=node_id,
                set=set_id,
                sip_uri=f"sip:127.0.0.1:{5071 + i};transport=udp",
                state=state,
                weight=weight,
                active_calls=calls,
                max_calls=200,
                version=version,
                agent_version="0.1.0",
                started_at=now - age,
                updated_at=now,
                probe="503 Service Unavailable" if state == NodeState.UNHEALTHY else "200 OK",
            )
            await etcd.put(ks.node(node_id), rec.to_json(), lease=lease)
        await actions.drain(etcd, ks, "ast-03", "alice@console", "kernel update")
        await actions.set_weight(etcd, ks, "ast-02", 25, "bob@api", "canary")
        for lb in ("lb-a", "lb-b"):
            status = BalancerStatus(
                id=lb,
                revision=42,
                list_hash="9f2c1e7ab04d",
                nodes=5,
                routable=2,
                last_reload_at=now - 3,
                updated_at=now,
            )
            await etcd.put(ks.balancer(lb), status.to_json(), lease=lease)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/fleet.png"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="af-shot-"))
    etcd = start_single(work)
    console: ManagedProcess | None = None
    try:
        asyncio.run(populate(etcd.endpoint))
        port = free_port()
        exe = shutil.which("asterfleet", path=str(Path(sys.executable).parent)) or "asterfleet"
        console = ManagedProcess(
            "console",
            [
                exe,
                "console",
                "--listen",
                f"127.0.0.1:{port}",
                "--etcd",
                etcd.endpoint,
                "--cluster",
                CLUSTER,
                "--db",
                str(work / "console.db"),
            ],
            work / "console.log",
            env={"ASTERFLEET_ADMIN_PASSWORD": PASSWORD},
        ).start()
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: httpx.get(f"{url}/healthz", timeout=1).json()["etcd_connected"],
            30,
            what="the console",
        )
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1360, "height": 520})
            sign_in(page, f"{url}/login?next=/fleet", "admin", PASSWORD)
            page.wait_for_selector("#live-status.on")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
        print(f"wrote {args.out}")
        return 0
    finally:
        if console is not None:
            console.stop()
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
