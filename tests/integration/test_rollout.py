"""Rolling upgrades on real processes: etcd, Kamailio with its generated
config, the balancer agent, SIPp boxes with node agents, the rollout
controller, and a SIPp caller placing calls through the balancer all along.

A box's replace action swaps it for a box of the target version (SIPp
answering with its version in a header; the node record carries it)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from asterfleet.lab.stack import Stack
from asterfleet.lab.swap import BoxSwapper, DrainWatcher, start_controller
from asterfleet.runtime.process import ManagedProcess, wait_for
from tests.integration.calls import setup_failures

pytestmark = pytest.mark.integration


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asterfleet", *args,
         "--etcd", stack.etcd_endpoint, "--cluster", stack.options.cluster],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def rollout_status(stack: Stack) -> dict[str, Any]:
    out = cli(stack, "rollout", "status", "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def phase_of(stack: Stack, node_id: str) -> str:
    return next(n["phase"] for n in rollout_status(stack)["nodes"] if n["id"] == node_id)


def fleet_nodes(stack: Stack) -> dict[str, dict[str, Any]]:
    out = cli(stack, "fleet", "ls", "--json")
    assert out.returncode == 0, out.stderr
    return {n["id"]: n for n in json.loads(out.stdout)["nodes"]}


@pytest.fixture
def swapper(stack: Stack) -> Iterator[BoxSwapper]:
    sw = BoxSwapper(stack, broken=frozenset({"v3"})).start()
    try:
        yield sw
    finally:
        sw.stop()


def _stop(*procs: ManagedProcess | None) -> None:
    for p in procs:
        if p is not None:
            p.stop(grace=5)


def test_four_nodes_rolled_under_load_drop_no_call_and_survive_a_killed_controller(
    stack: Stack, swapper: BoxSwapper
) -> None:
    nodes = [f"ast{i}" for i in range(1, 5)]
    for node_id in nodes:
        swapper.add(node_id, "v1")
    for node_id in nodes:
        stack.wait_routable(stack.nodes[node_id], timeout=60)
    watcher = DrainWatcher(stack).start()
    uac = stack.start_calls(rate=20, hold_ms=1000)
    controller: ManagedProcess | None = start_controller(stack, swapper.replace_action)
    restarted: ManagedProcess | None = None
    try:
        started = cli(
            stack, "rollout", "start", "--version", "v2", "--gate-calls", "5",
            "--pause-after", "1", "--by", "ci",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr

        # A canary: the rollout pauses after the first node, resumed from the CLI.
        wait_for(lambda: rollout_status(stack)["state"] == "paused", 60, what="paused after 1")
        assert phase_of(stack, "ast1") == "done"
        assert phase_of(stack, "ast2") == "pending"
        resumed = cli(stack, "rollout", "resume", "--by", "ci")
        assert resumed.returncode == 0, resumed.stderr

        # Kill the controller in the middle of a node; a new one resumes.
        wait_for(lambda: phase_of(stack, "ast3") == "replacing", 60, what="ast3 replacing")
        assert controller is not None
        controller.kill()
        controller = None
        restarted = start_controller(stack, swapper.replace_action, name="rollout2")

        wait_for(lambda: rollout_status(stack)["state"] != "running", 120, what="rollout ended")
        final_rollout = rollout_status(stack)
        assert final_rollout["state"] == "succeeded", final_rollout["reason"]
        assert [n["phase"] for n in final_rollout["nodes"]] == ["done"] * 4
    finally:
        _stop(controller, restarted)
        watcher.stop()
    final = uac.stop_gracefully(30)

    assert swapper.errors == []
    assert setup_failures(uac) == 0, uac.message_counts()
    assert final.failed_calls == 0, uac.message_counts()
    assert final.successful_calls > 200
    fleet = fleet_nodes(stack)
    for node_id in nodes:
        assert fleet[node_id]["version"] == "v2"
        assert fleet[node_id]["state"] == "active"
        assert fleet[node_id]["operator"] == "-"  # undrained by the rollout
        (old,) = swapper.retired[node_id]
        applied_at = watcher.disabled_at[old.sip_uri]
        late = [t for t in old.uas.invite_times() if t > applied_at]
        assert late == [], f"{len(late)} INVITEs reached old {node_id} after its drain"
        # the new box took real calls, not only its 5 gate calls
        assert stack.nodes[node_id].uas.invites_received() > 5


def test_a_version_that_fails_the_gate_is_rolled_back_and_the_rollout_stops(
    stack: Stack, swapper: BoxSwapper
) -> None:
    for node_id in ("ast1", "ast2"):
        swapper.add(node_id, "v1")
    for b in list(stack.nodes.values()):
        stack.wait_routable(b, timeout=60)
    uac = stack.start_calls(rate=10, hold_ms=500)
    controller = start_controller(stack, swapper.replace_action)
    try:
        started = cli(stack, "rollout", "start", "--version", "v3", "--gate-calls", "3")
        assert started.returncode == 0, started.stderr
        wait_for(lambda: rollout_status(stack)["state"] != "running", 90, what="rollout ended")
    finally:
        _stop(controller)
    final = uac.stop_gracefully(30)

    status = rollout_status(stack)
    assert status["state"] == "failed"
    assert status["reason"].startswith("gate failed on ast1: 3 of 3 test calls")
    assert "ast1 rolled back" in status["reason"]
    assert [n["phase"] for n in status["nodes"]] == ["rolled-back", "pending"]
    assert [s.version for s in swapper.swaps] == ["v3", "v1"]
    fleet = fleet_nodes(stack)
    assert fleet["ast1"]["version"] == "v1" and fleet["ast1"]["state"] == "active"
    assert fleet["ast2"]["version"] == "v1"  # never touched
    assert setup_failures(uac) == 0 and final.failed_calls == 0, uac.message_counts()
    text = cli(stack, "rollout", "status")
    assert "gate failed on ast1" in text.stdout


def test_abort_from_the_cli_gives_a_draining_node_its_calls_back(
    stack: Stack, swapper: BoxSwapper
) -> None:
    swapper.add("ast1", "v1")
    stack.wait_routable(stack.nodes["ast1"], timeout=60)
    uac = stack.start_calls(rate=5, hold_ms=30000)  # long calls: the drain waits
    wait_for(lambda: stack.nodes["ast1"].uas.stats().current_calls > 0, 20, what="calls")
    controller = start_controller(stack, swapper.replace_action)
    try:
        assert cli(stack, "rollout", "start", "--version", "v2").returncode == 0
        wait_for(lambda: phase_of(stack, "ast1") == "draining", 30, what="ast1 draining")
        paused = cli(stack, "rollout", "pause", "--by", "alice")
        assert paused.returncode == 0 and "paused by alice" in paused.stdout
        aborted = cli(stack, "rollout", "abort", "--by", "alice")
        assert aborted.returncode == 0, aborted.stderr
        wait_for(lambda: fleet_nodes(stack)["ast1"]["operator"] == "-", 15, what="undrained")
        again = cli(stack, "rollout", "resume")
        assert again.returncode == 2 and "aborted" in again.stderr
    finally:
        _stop(controller)
    uac.stop()
    status = rollout_status(stack)
    assert status["state"] == "aborted" and status["reason"] == "aborted by alice"
    assert swapper.swaps == []  # the box was never replaced
    assert fleet_nodes(stack)["ast1"]["state"] == "active"
    controller.signal(signal.SIGTERM) if controller.alive() else None
