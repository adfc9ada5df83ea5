"""Rolling upgrades on real processes: etcd, Kamailio with its generated
config, the balancer agent, SIPp boxes with node agents, the rollout
controller, and a SIPp caller placing calls through the balancer all along.

A box's replace action swaps it for a box of the target version (SIPp
answering with its version in a header; the node record carries it)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.keys import Keyspace
from asterfleet.lab.stack import Stack
from asterfleet.lab.swap import BoxSwapper, DrainWatcher, start_controller
from asterfleet.rollout.operations import change_rollout, get_rollout
from asterfleet.runtime.process import ManagedProcess, wait_for
from asterfleet.sipp.runner import SippStats, SippUac
from tests.integration.calls import setup_failures

pytestmark = pytest.mark.integration
T = TypeVar("T")


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asterfleet", *args,
         "--etcd", stack.etcd_endpoint, "--cluster", stack.options.cluster],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _read(stack: Stack, fn: Callable[[Etcd, Keyspace], Awaitable[T]]) -> T:
    async def go() -> T:
        async with Etcd(stack.etcd_endpoint) as etcd:
            return await fn(etcd, Keyspace(stack.options.cluster))

    return asyncio.run(go())


def rollout_status(stack: Stack) -> dict[str, Any]:
    """What 'asterfleet rollout status --json' says (read in-process: CLI start-up
    is slow on a loaded machine and the tests poll)."""
    r = _read(stack, lambda e, ks: get_rollout(e, ks))
    data: dict[str, Any] = r.model_dump(mode="json")
    return data


def phase_of(stack: Stack, node_id: str) -> str:
    return next(n["phase"] for n in rollout_status(stack)["nodes"] if n["id"] == node_id)


def fleet_nodes(stack: Stack) -> dict[str, dict[str, Any]]:
    view = _read(stack, read_fleet)
    return {n.id: n.as_dict() for n in view.nodes}


def assert_no_call_setup_failed(uac: SippUac, final: SippStats) -> None:
    counts = uac.message_counts()
    assert setup_failures(uac) == 0, counts
    assert counts["4_200_Recv"] == counts["0_INVITE_Sent"], counts  # every INVITE answered
    # uac.xml takes a late provisional (a 180 relayed behind its 200 by the
    # balancer's parallel workers) back to the hold, so it fails no call.
    # Anything else unexpected at the hold shows as 6_Pause_Unexp; nothing
    # else may fail.
    assert final.failed_calls == counts.get("6_Pause_Unexp", 0), counts


@pytest.fixture
def swapper(stack: Stack) -> Iterator[BoxSwapper]:
    # A call whose BYE was lost on a loaded machine would stay "in progress"
    # on a SIPp box forever (Asterisk would time it out on RTP): 10 s.
    sw = BoxSwapper(
        stack, broken=frozenset({"v3"}), uas_args=("-trace_msg", "-recv_timeout", "10000")
    ).start()
    try:
        yield sw
    finally:
        sw.stop()


def _stop(*procs: ManagedProcess | None) -> None:
    for p in procs:
        if p is not None:
            p.stop(grace=5)


@pytest.mark.slow
@pytest.mark.timeout(900)
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
            "--pause-after", "1", "--drain-timeout", "30", "--by", "ci",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr

        # A canary: the rollout pauses after the first node; resumed.
        wait_for(lambda: rollout_status(stack)["state"] == "paused", 180, what="paused after 1")
        assert phase_of(stack, "ast1") == "done"
        assert phase_of(stack, "ast2") == "pending"

        def resumed() -> bool:  # retried: a loaded machine's etcd may miss one call
            if rollout_status(stack)["state"] != "running":
                _read(stack, lambda e, ks: change_rollout(e, ks, None, "resume", "ci"))
            return True

        wait_for(resumed, 60, what="the rollout resumed")

        # Kill the controller in the middle of a node; a new one resumes.
        wait_for(lambda: phase_of(stack, "ast3") == "replacing", 240, what="ast3 replacing")
        assert controller is not None
        controller.kill()
        controller = None
        restarted = start_controller(stack, swapper.replace_action, name="rollout2")

        wait_for(lambda: rollout_status(stack)["state"] != "running", 300, what="rollout ended")
        final_rollout = rollout_status(stack)
        assert final_rollout["state"] == "succeeded", final_rollout["reason"]
        assert [n["phase"] for n in final_rollout["nodes"]] == ["done"] * 4
        # Every new box is back in rotation: it takes real calls, not only
        # its 5 gate calls (the last one needs a moment after its undrain).
        for node_id in nodes:
            box = stack.nodes[node_id]
            wait_for(lambda b=box: b.uas.invites_received() > 5, 30, what=f"calls on new {node_id}")
    finally:
        _stop(controller, restarted)
        watcher.stop()
    final = uac.stop_gracefully(30)

    assert swapper.errors == []
    assert_no_call_setup_failed(uac, final)
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


@pytest.mark.timeout(600)
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
        wait_for(lambda: rollout_status(stack)["state"] != "running", 240, what="rollout ended")
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
    assert_no_call_setup_failed(uac, final)
    text = cli(stack, "rollout", "status")
    assert "gate failed on ast1" in text.stdout


@pytest.mark.timeout(900)
def test_abort_from_the_cli_gives_a_draining_node_its_calls_back(
    stack: Stack, swapper: BoxSwapper
) -> None:
    swapper.add("ast1", "v1", uas_args=())  # calls held 30 s: no receive timeout
    stack.wait_routable(stack.nodes["ast1"], timeout=60)
    uac = stack.start_calls(rate=5, hold_ms=30000)  # long calls: the drain waits
    wait_for(lambda: stack.nodes["ast1"].uas.stats().current_calls > 0, 20, what="calls")
    controller = start_controller(stack, swapper.replace_action)
    try:
        started = cli(stack, "rollout", "start", "--version", "v2", "--by", "ci")
        assert started.returncode == 0, started.stderr
        wait_for(lambda: phase_of(stack, "ast1") == "draining", 120, what="ast1 draining")
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
