"""With a three-member etcd, losing the member an agent talks to changes
nothing: agents fail over to the next endpoint and keep their leases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.lab.stack import Stack, StackOptions
from asterfleet.runtime.process import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def ha_stack(tmp_path: Path) -> Iterator[Stack]:
    st = Stack(tmp_path / "stack", StackOptions(cluster="ha", etcd_members=3))
    try:
        st.start()
        yield st
    finally:
        st.stop()


def test_losing_one_etcd_member_keeps_nodes_routed_and_changes_flowing(ha_stack: Stack) -> None:
    st = ha_stack
    assert st.etcd_endpoint.count(",") == 2
    first = st.add_node("ast1")
    st.wait_routable(first)
    uac = st.start_calls(rate=10, hold_ms=500)

    # Every agent was given the endpoints in the same order: kill the first.
    st.etcd_cluster[0].kill()
    deadline = time.monotonic() + st.options.node_ttl + 3  # longer than a lease
    while time.monotonic() < deadline:
        assert first.sip_uri in st.dispatcher_by_uri(), "ast1 left the list"
        time.sleep(0.5)
    # The balancer still follows the fleet through the surviving members.
    second = st.add_node("ast2")
    st.wait_routable(second, timeout=20)
    wait_for(lambda: second.uas.invites_received() > 0, 10, what="calls on ast2")
    final = uac.stop_gracefully(30)
    assert final.failed_calls == 0
    assert final.successful_calls > 30
