"""The fleet across hosts: real containers, each with its own address.

On a podman network the test creates: 3 etcd members, 2 kamailio-lb Pods
sharing a virtual IP (keepalived inside, unicast VRRP), 4 testbox Pods
(SIPp as the box + node agent), all started from deploy/kubernetes' Pod
templates with ``podman kube play``. A SIPp caller on the network's gateway
places 20 calls/s to the VIP for the whole test; what a user checks is what
the caller counts. Figures are printed (``-s``) for the README.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.runtime.process import wait_for
from asterfleet.sipp.runner import SippUac
from tests.integration.calls import established_then_lost, setup_failures
from tests.integration.podman_cluster import (
    BOXES,
    ETCD,
    GATEWAY,
    LBS,
    TTL,
    VIP,
    Cluster,
    elapsed_until,
    ensure_images,
    podman_cluster,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

RATE = 20
HOLD_MS = 1000


def report(what: str, value: object) -> None:
    print(f"cluster figure: {what}: {value}", flush=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    for program in ("podman", "kubectl", "etcdctl", "sipp", "nsenter", "ip"):
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin") is None:
            pytest.fail(f"{program} is missing: run scripts/ensure-deps.sh")
    report("images ready after (s)", round(ensure_images(), 1))
    work = Path(tempfile.mkdtemp(prefix="cluster-test-"))
    try:
        started = time.monotonic()
        with podman_cluster(work) as running:
            report("cluster up after (s)", round(time.monotonic() - started, 1))
            yield running
    finally:
        if os.environ.get("ASTERFLEET_KEEP_LOGS"):
            print(f"cluster logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def caller(cluster: Cluster) -> Iterator[SippUac]:
    uac = SippUac(
        cluster.work / "caller",
        VIP,
        5060,
        rate=RATE,
        hold_ms=HOLD_MS,
        recv_timeout_ms=8000,
        host=GATEWAY,
        name="caller",
    ).start()
    try:
        time.sleep(3)  # a few seconds of steady load before the first failure
        yield uac
    finally:
        stats = uac.stop_gracefully(timeout=30)
        report("calls placed, succeeded, failed", (
            stats.total_calls_created, stats.successful_calls, stats.failed_calls,
        ))  # fmt: skip


def wait_calls(uac: SippUac, seconds: float) -> None:
    """Let the caller run ``seconds`` more (load flows while we wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert uac.alive(), uac.log_tail()
        time.sleep(0.25)


def restart_box(cluster: Cluster, box: str) -> None:
    cluster.remove_pod(box)
    cluster.play("StatefulSet", "asterisk", box, BOXES[box])


def test_a_killed_box_loses_only_its_own_calls_and_leaves_both_balancers(
    cluster: Cluster, caller: SippUac
) -> None:
    box = "asterisk-3"
    lost_before = established_then_lost(caller)
    pids = cluster.pids(box)
    # SIGKILL straight to the Pod's processes (box, agent, infra): at once,
    # without podman's own latency in the measure.
    killed_at = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    for lb in LBS:
        gone = elapsed_until(lambda lb=lb: BOXES[box] not in cluster.routable(lb), TTL + 5)  # type: ignore[misc]
        assert gone is not None, f"{box} still routed by {lb}"
    unrouted = time.monotonic() - killed
    report("killed box takes no new call on either balancer after (s)", round(unrouted, 2))
    # Its record expires with its lease: then it leaves both lists.
    for lb in LBS:
        gone = elapsed_until(lambda lb=lb: BOXES[box] not in cluster.dispatcher(lb), TTL + 5)  # type: ignore[misc]
        assert gone is not None, f"{box} still listed by {lb}"
    polled = time.monotonic() - killed
    report("killed box seen gone from both lists over podman exec after (s)", round(polled, 2))
    applied = [cluster.applied_with(lb, len(BOXES) - 1, killed_at) for lb in LBS]
    assert None not in applied, applied
    left = max(at for at in applied if at is not None) - killed_at
    report(f"killed box gone from both balancers (agents' apply) after (s), TTL {TTL}",
           round(left, 2))  # fmt: skip
    wait_calls(caller, 10)  # calls placed while it was gone, and their retries, have ended
    assert setup_failures(caller) == 0
    report("calls established on the killed box, lost with it",
           established_then_lost(caller) - lost_before)  # fmt: skip
    assert left <= TTL + 1
    restart_box(cluster, box)
    cluster.wait_routable(set(BOXES.values()))
    assert setup_failures(caller) == 0


def test_the_vip_moves_when_its_holder_stops_and_calls_after_the_move_succeed(
    cluster: Cluster, caller: SippUac
) -> None:
    (holder,) = cluster.vip_holders()
    (other,) = [lb for lb in LBS if lb != holder]
    # What an operator's alert reads: each balancer agent's asterfleet_balancer_vip_held.
    wait_for(
        lambda: (cluster.vip_held_metric(holder), cluster.vip_held_metric(other)) == (1, 0),
        10, interval=0.2, what="the balancer agents to export who holds the VIP",
    )  # fmt: skip
    failed_before = setup_failures(caller)
    holder_pid, other_pid = cluster.infra_pid(holder), cluster.infra_pid(other)
    assert cluster.netns_holds_vip(holder_pid) and not cluster.netns_holds_vip(other_pid)
    # Stopped in the background, timed from the command: the stop itself
    # (SIGTERM to every container of the Pod) is part of the measure.
    stopping = subprocess.Popen(
        cluster.podman.argv(["pod", "stop", "-t", "5", cluster.pod_name(holder)]),
        env=cluster.podman.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stopped = time.monotonic()
    left_at = moved_at = None
    while time.monotonic() - stopped < 15 and (moved_at is None or left_at is None):
        now = time.monotonic() - stopped
        if left_at is None and not cluster.netns_holds_vip(holder_pid):
            left_at = now
        if moved_at is None and cluster.netns_holds_vip(other_pid):
            moved_at = now
        time.sleep(0.02)
    _, stop_errors = stopping.communicate(timeout=60)
    assert stopping.returncode == 0, stop_errors
    assert moved_at is not None, "the VIP did not move"
    report("VIP left the stopped holder after (s)", left_at and round(left_at, 2))
    report("VIP on the other balancer after (s)", round(moved_at, 2))
    assert moved_at <= 4
    wait_for(lambda: cluster.vip_held_metric(other) == 1, 5, interval=0.2, what="metric moved")
    # Calls started before the move have settled after the caller's timeout.
    wait_calls(caller, 9)
    failed_at_move = setup_failures(caller)
    report("call setups failed during the VIP move", failed_at_move - failed_before)
    placed = caller.stats().total_calls_created
    wait_calls(caller, 10)
    assert caller.stats().total_calls_created - placed >= 150
    assert setup_failures(caller) == failed_at_move, "calls set up after the move failed"
    cluster.podman.run("pod", "start", cluster.pod_name(holder))
    cluster.wait_routable(set(BOXES.values()), timeout=60)
    assert cluster.vip_holders() == [other]  # nopreempt: the VIP does not move back
    wait_for(lambda: cluster.vip_held_metric(holder) == 0, 30, interval=0.5, what="metric back")
    assert cluster.vip_held_metric(other) == 1


def test_an_etcd_member_cut_off_changes_nothing_and_catches_up(
    cluster: Cluster, caller: SippUac
) -> None:
    member = "etcd-2"
    before = {lb: cluster.dispatcher(lb) for lb in LBS}
    failed_before = setup_failures(caller)
    infra = cluster.infra(member)
    was_leader = cluster.is_leader(member)
    cluster.podman.run("network", "disconnect", cluster.network, infra)
    try:
        # Accepted by the two members left (after an election when the cut-off
        # member was the leader).
        written = elapsed_until(lambda: cluster.try_put("/cluster-test/partition", "yes"), 20)
        assert written is not None, "the remaining majority did not take a write"
        report(f"write taken by the majority after (s), cut-off member leader: {was_leader}",
               round(written, 2))  # fmt: skip
        deadline = time.monotonic() + 30
        checks = 0
        while time.monotonic() < deadline:
            for lb in LBS:
                assert cluster.dispatcher(lb) == before[lb], f"{lb} changed"
            checks += 1
            time.sleep(0.5)
    finally:
        cluster.podman.run("network", "connect", "--ip", ETCD[member], cluster.network, infra)
    report("balancer lists unchanged over 30 s, checks", checks)
    leader_rev = cluster.member_revision("etcd-0")
    caught_up = elapsed_until(lambda: _revision_at_least(cluster, member, leader_rev), 30, step=0.5)
    assert caught_up is not None, f"{member} did not catch up"
    report("cut-off etcd member caught up after (s)", round(caught_up, 2))
    got = cluster.etcdctl("get", "--consistency=s", "--print-value-only",
                          "/cluster-test/partition", member=member)  # fmt: skip
    assert got.strip() == "yes"
    assert setup_failures(caller) == failed_before


def _revision_at_least(cluster: Cluster, member: str, revision: int) -> bool:
    try:
        return cluster.member_revision(member) >= revision
    except subprocess.CalledProcessError:
        return False


def test_a_box_cut_off_from_etcd_expires_gets_no_calls_and_returns(
    cluster: Cluster, caller: SippUac
) -> None:
    box = "asterisk-1"
    pid = str(cluster.infra_pid(box))
    failed_before = setup_failures(caller)
    routes = [["ip", "route", "add", "blackhole", f"{ip}/32"] for ip in ETCD.values()]
    for argv in routes:
        subprocess.run(["nsenter", "-t", pid, "-n", *argv], check=True, timeout=10)
    try:
        expired = elapsed_until(
            lambda: all(BOXES[box] not in cluster.routable(lb) for lb in LBS), TTL + 10
        )
        assert expired is not None, f"{box} still routed while cut off from etcd"
        report("box cut off from etcd unrouted after (s)", round(expired, 2))
        wait_calls(caller, 2)  # calls already set up there end (hold 1 s)
        invites = cluster.box_invites(box)
        wait_calls(caller, 8)
        assert cluster.box_invites(box) == invites, "a new call reached the cut-off box"
    finally:
        for argv in routes:
            argv[2] = "del"
            subprocess.run(["nsenter", "-t", pid, "-n", *argv], check=False, timeout=10)
    back = elapsed_until(lambda: all(BOXES[box] in cluster.routable(lb) for lb in LBS), 30)
    assert back is not None, f"{box} did not return"
    report("box back in both balancers after reconnect (s)", round(back, 2))
    invites = cluster.box_invites(box)
    wait_calls(caller, 5)
    assert cluster.box_invites(box) > invites
    assert setup_failures(caller) == failed_before


def test_a_rolling_restart_drains_every_box_and_fails_no_call(
    cluster: Cluster, caller: SippUac
) -> None:
    failed_before = setup_failures(caller)
    lost_before = established_then_lost(caller)
    everyone = set(BOXES.values())
    for box in BOXES:
        started = time.monotonic()
        agent = cluster.container(box, "node-agent")
        # What the kubelet does: SIGTERM to the agent, which drains the box
        # and exits once its calls have ended; then the Pod is replaced.
        cluster.podman.run("kill", "--signal", "TERM", agent)
        code = cluster.podman.out("wait", agent, timeout=90)
        assert code == "0", f"{box}'s agent exited with {code}"
        drained = time.monotonic() - started
        assert all(BOXES[box] not in cluster.routable(lb) for lb in LBS)
        # Then the box itself stops (its preStop waited for the agent) and
        # the Pod is replaced.
        cluster.remove_pod(box)
        cluster.play("StatefulSet", "asterisk", box, BOXES[box])
        cluster.wait_routable(everyone, timeout=60)
        report(f"{box} drained in (s), replaced and routed again after (s)",
               (round(drained, 1), round(time.monotonic() - started, 1)))  # fmt: skip
    wait_calls(caller, 3)
    assert setup_failures(caller) == failed_before
    assert established_then_lost(caller) == lost_before
