"""How long does a rollout take per node, against the box's own drain and
restart time? The difference is the rollout controller's overhead (target:
at most 5 s per node).

Starts etcd, Kamailio (generated config), the balancer agent and ``--nodes``
SIPp boxes with node agents on loopback, and a SIPp caller placing
``--rate`` calls/s through the balancer all along (each held ``--hold-ms``).

1. The box's own time, per node: retire the box the way a container stop
   does (SIGTERM: its agent drains, waits for its calls, leaves) and start
   a new one, until the node is registered ``active`` again.
2. The gate: ``--gate-calls`` test calls through the balancer to one box.
3. The rollout: ``asterfleet rollout run`` + ``asterfleet rollout start
   --version v2 --gate-calls N``; per node, from the rollout's drain to the
   node's undrain (``started`` → ``since`` of ``done`` in the record).

Overhead per node = rollout time − box time − gate time.

    .venv/bin/python bench/rollout.py                 # 3 nodes, 5 gate calls, 10 calls/s
    .venv/bin/python bench/rollout.py --nodes 4 --rate 20

Writes the figures to bench/results/rollout-<time>.json. Exit code 0 when
the mean overhead is at most --target seconds, 1 when not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from asterfleet.etcd_client import Etcd
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.keys import Keyspace
from asterfleet.lab.stack import Stack, StackOptions
from asterfleet.lab.swap import BoxSwapper, start_controller
from asterfleet.rollout.gate import GateCalls, run_gate
from asterfleet.rollout.operations import get_rollout
from asterfleet.runtime.process import wait_for

CLUSTER = "bench"


def node_state(stack: Stack, node_id: str) -> tuple[str | None, str | None]:
    async def go() -> tuple[str | None, str | None]:
        async with Etcd(stack.etcd_endpoint) as etcd:
            view = await read_fleet(etcd, Keyspace(CLUSTER))
        n = view.node(node_id)
        return (n.record.state.value, n.record.version) if n else (None, None)

    return asyncio.run(go())


def box_time(stack: Stack, swapper: BoxSwapper, node_id: str, version: str) -> float:
    """Retire the box and start a new one, until its node is active again."""
    t0 = time.monotonic()
    old = stack.nodes.pop(node_id)
    Stack.retire(old, timeout=120)
    swapper.add(node_id, version)
    wait_for(lambda: node_state(stack, node_id) == ("active", version), 120, 0.02, "active")
    return time.monotonic() - t0


def rollout(stack: Stack) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with Etcd(stack.etcd_endpoint) as etcd:
            r = await get_rollout(etcd, Keyspace(CLUSTER))
        data: dict[str, Any] = r.model_dump(mode="json")
        return data

    return asyncio.run(go())


def cli(stack: Stack, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "asterfleet", *args,
         "--etcd", stack.etcd_endpoint, "--cluster", CLUSTER],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return json.loads(out.stdout) if "--json" in args else out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--gate-calls", type=int, default=5)
    ap.add_argument("--rate", type=float, default=10.0, help="caller's calls/s")
    ap.add_argument("--hold-ms", type=int, default=1000)
    ap.add_argument("--target", type=float, default=5.0, help="overhead target, s/node")
    opts = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="asterfleet-bench-rollout-") as tmp:
        stack = Stack(Path(tmp), StackOptions(cluster=CLUSTER))
        # A call whose BYE was lost on a loaded machine would stay "in
        # progress" on a SIPp box forever (Asterisk times it out on RTP).
        swapper = BoxSwapper(stack, uas_args=("-recv_timeout", "10000"))
        controller = None
        try:
            stack.start()
            swapper.start()
            nodes = [f"ast{i + 1}" for i in range(opts.nodes)]
            for n in nodes:
                swapper.add(n, "v1")
            for n in nodes:
                stack.wait_routable(stack.nodes[n], timeout=60)
            uac = stack.start_calls(rate=opts.rate, hold_ms=opts.hold_ms)
            wait_for(lambda: uac.stats().successful_calls > 0, 30, what="calls answered")

            own = {n: box_time(stack, swapper, n, "v1") for n in nodes}
            uri = stack.nodes[nodes[0]].sip_uri
            t0 = time.monotonic()
            verdict = run_gate(uri, opts.gate_calls, GateCalls((("127.0.0.1", stack.sip_port),)))
            gate = time.monotonic() - t0
            assert verdict == "passed", verdict

            controller = start_controller(stack, swapper.replace_action)
            cli(stack, "rollout", "start", "--version", "v2", "--drain-timeout", "30",
                "--gate-calls", str(opts.gate_calls), "--json")  # fmt: skip
            # Read in-process: on a loaded machine each CLI start-up takes seconds.
            wait_for(lambda: rollout(stack)["state"] != "running", 900, 0.5, "rollout finished")
            status = rollout(stack)
            final = uac.stop_gracefully(60)
        finally:
            if controller is not None:
                controller.stop()
            swapper.stop()
            stack.stop()

    rows = []
    for n in status["nodes"]:
        took = n["since"] - n["started"]
        rows.append(
            {"node": n["id"], "rollout_s": took, "box_s": own[n["id"]], "gate_s": gate,
             "overhead_s": took - own[n["id"]] - gate}
        )  # fmt: skip
    mean = statistics.mean(r["overhead_s"] for r in rows)
    print(f"rollout {status['id']}: {status['state']} ({status['reason']})")
    setup_failed, lost = uac.setup_failures(), uac.established_then_lost()
    print(
        f"calls: {uac.answered()} answered, {setup_failed} failed before the answer, "
        f"{lost} answered then lost; SIPp counted {final.failed_calls} failed"
    )
    print(f"{'node':8} {'rollout s':>10} {'box s':>8} {'gate s':>8} {'overhead s':>11}")
    for r in rows:
        print(
            f"{r['node']:8} {r['rollout_s']:10.2f} {r['box_s']:8.2f} {r['gate_s']:8.2f} "
            f"{r['overhead_s']:11.2f}"
        )
    print(f"mean overhead {mean:.2f} s/node (target <= {opts.target:g} s)")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rollout-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
        json.dumps(
            {
                "options": vars(opts),
                "rows": rows,
                "mean_overhead_s": mean,
                "calls": {
                    "answered": uac.answered(),
                    "setup_failed": setup_failed,
                    "established_then_lost": lost,
                    "sipp_failed": final.failed_calls,
                },
                "state": status["state"],
            },
            indent=2,
        )
    )
    return 0 if status["state"] == "succeeded" and mean <= opts.target else 1


if __name__ == "__main__":
    sys.exit(main())
