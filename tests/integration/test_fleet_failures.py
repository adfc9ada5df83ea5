"""What happens to calls when boxes die, drain, or etcd and Kamailio go away."""

from __future__ import annotations

import time

import pytest

from asterfleet.lab.stack import Stack
from asterfleet.runtime.process import wait_for

from .calls import established_then_lost, setup_failures

pytestmark = pytest.mark.integration


def test_kill_9_of_a_box_under_load_fails_no_call_setup(stack: Stack) -> None:
    nodes = [stack.add_node(f"ast{i}") for i in (1, 2, 3)]
    for b in nodes:
        stack.wait_routable(b)
    victim = nodes[1]
    uac = stack.start_calls(rate=20, hold_ms=500)
    wait_for(lambda: uac.stats().successful_calls >= 40, 30, what="40 calls answered")

    killed_at = time.monotonic()
    stack.kill_node(victim.node_id)
    wait_for(
        lambda: victim.sip_uri not in stack.dispatcher_by_uri(),
        stack.options.node_ttl + 1,
        what=f"{victim.node_id} gone from Kamailio within TTL + 1 s",
    )
    gone_after = time.monotonic() - killed_at

    # Keep calling for a while with the box gone, then let calls finish.
    time.sleep(3)
    final = uac.stop_gracefully(30)
    assert final.successful_calls > 150
    assert setup_failures(uac) == 0, uac.message_counts()
    # A call already answered by the killed box dies with it (its BYE gets
    # no answer); at 20 calls/s held 0.5 s a third of ~10 calls in flight.
    assert final.failed_calls == established_then_lost(uac) <= 8
    print(f"node gone after {gone_after:.2f}s; {final.failed_calls} established calls lost")


def test_drain_under_load_drops_nothing_and_node_leaves_when_idle(stack: Stack) -> None:
    nodes = [
        stack.add_node(f"ast{i}", uas_args=("-trace_msg",) if i == 2 else ()) for i in (1, 2, 3)
    ]
    for b in nodes:
        stack.wait_routable(b)
    target = nodes[1]
    uac = stack.start_calls(rate=10, hold_ms=3000)
    wait_for(lambda: target.uas.invites_received() >= 5, 20, what="calls on ast2")

    import signal

    target.agent.signal(signal.SIGTERM)
    wait_for(
        lambda: stack.dispatcher_by_uri()[target.sip_uri].flags.startswith("D"),
        5,
        what="ast2 disabled in Kamailio",
    )
    applied_at = time.time()
    # The agent waits for its calls (held 3 s) to end, then leaves.
    assert target.agent.proc is not None
    assert target.agent.proc.wait(timeout=30) == 0
    left_at = time.time()
    wait_for(lambda: target.sip_uri not in stack.dispatcher_by_uri(), 3, what="ast2 removed")
    assert left_at - applied_at >= 1.0  # it did wait for calls in progress

    final = uac.stop_gracefully(30)
    assert final.failed_calls == 0, uac.message_counts()
    late = [t for t in target.uas.invite_times() if t > applied_at]
    assert late == [], f"{len(late)} INVITEs reached ast2 after the drain was applied"
    assert final.successful_calls >= 30


def test_etcd_outage_of_30s_under_load_changes_nothing_then_resyncs(stack: Stack) -> None:
    nodes = [stack.add_node(f"ast{i}") for i in (1, 2)]
    for b in nodes:
        stack.wait_routable(b)
    before = stack.dispatcher()
    uac = stack.start_calls(rate=10, hold_ms=500)
    assert stack.etcd is not None

    stack.etcd.stop()
    # A node that starts while etcd is away keeps retrying.
    newcomer = stack.add_node("ast3")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert stack.dispatcher() == before, "the list changed while etcd was away"
        time.sleep(1)

    stack.etcd.restart()
    stack.wait_routable(newcomer, timeout=15)
    now = stack.dispatcher_by_uri()
    assert all(now[b.sip_uri].flags == "AP" for b in nodes)
    final = uac.stop_gracefully(30)
    assert final.failed_calls == 0, uac.message_counts()
    assert final.successful_calls >= 300


def test_kamailio_restart_gets_the_list_reapplied(stack: Stack) -> None:
    nodes = [stack.add_node(f"ast{i}") for i in (1, 2)]
    for b in nodes:
        stack.wait_routable(b)
    expected = {d.uri: d.flags[0] for d in stack.dispatcher()}
    assert stack.kamailio is not None

    stack.kamailio.stop()
    # While it is down, something replaces the list with a stale, empty one.
    stack.list_file.write_text("")
    stack.kamailio.start()
    wait_for(
        lambda: {d.uri: d.flags[0] for d in stack.dispatcher()} == expected,
        2,
        what="the list re-applied within 2 s of Kamailio's restart",
    )
    uac = stack.start_calls(rate=20, hold_ms=0, max_calls=20)
    assert uac.wait(30) == 0
