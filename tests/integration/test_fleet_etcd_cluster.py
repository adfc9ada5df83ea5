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


def test_a_watch_that_goes_silent_is_noticed_and_the_prefix_read_again(tmp_path: Path) -> None:
    """A watch left on a member that stops delivering (seen once after an
    etcd member was killed: 26 s of writes never came) must not leave the
    balancer behind: a write newer than what it applied means a re-read."""
    import asyncio
    import contextlib
    from collections.abc import AsyncIterator

    from asterfleet.balancer.agent import BalancerAgent, BalancerConfig
    from asterfleet.etcd_client import Etcd, WatchEvent, WatchLost
    from asterfleet.etcdtools.server import EtcdServer
    from asterfleet.fleet.keys import Keyspace
    from asterfleet.fleet.model import NodeRecord

    server = EtcdServer(tmp_path / "etcd")
    server.start()
    try:

        async def scenario() -> list[str]:
            agent = BalancerAgent(
                BalancerConfig(
                    etcd=server.endpoint,
                    cluster="c1",
                    balancer_id="lb1",
                    list_file=tmp_path / "dispatcher.list",
                    rpc=str(tmp_path / "no-kamailio.sock"),
                )
            )

            @contextlib.asynccontextmanager
            async def silent_watch(
                prefix: str, start_revision: int
            ) -> AsyncIterator[asyncio.Queue[WatchEvent | WatchLost]]:
                yield asyncio.Queue()  # accepted, then never a word

            agent.etcd.watch_prefix = silent_watch  # type: ignore[method-assign]
            loop = asyncio.create_task(agent.etcd_loop())
            try:
                deadline = time.monotonic() + 10
                while not agent.synced and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                record = NodeRecord(id="ast1", sip_uri="sip:10.0.0.5:5060")
                async with Etcd(server.endpoint) as etcd:
                    await etcd.put(Keyspace("c1").node("ast1"), record.model_dump_json().encode())
                while "ast1" not in agent.parsed.nodes and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                return sorted(agent.parsed.nodes)
            finally:
                agent.stopping.set()
                loop.cancel()
                with contextlib.suppress(BaseException):
                    await loop
                await agent.etcd.close()

        assert asyncio.run(scenario()) == ["ast1"]
    finally:
        server.stop()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tasks_sharing_a_connection_fail_over_together_without_losing_a_call(
    tmp_path: Path,
) -> None:
    """An agent's tasks share one etcd connection. When the first endpoint
    is down, every call in flight fails there at once: each must move on
    and be answered, and no task may see a CancelledError because another
    one closed the client it was using (that killed the node agent's
    registration loop silently: the node never appeared)."""
    import asyncio

    from asterfleet.etcd_client import Etcd
    from asterfleet.etcdtools.server import start_single

    member = start_single(tmp_path / "etcd")
    try:
        endpoints = f"127.0.0.1:{_closed_port()},{member.endpoint},127.0.0.1:{_closed_port()}"

        async def scenario() -> tuple[list[str], str]:
            etcd = Etcd(endpoints)
            try:
                results = await asyncio.gather(
                    *(etcd.get_prefix("/af/") for _ in range(20)),
                    *(etcd.grant(5) for _ in range(5)),
                    return_exceptions=True,
                )
                return [type(r).__name__ for r in results if isinstance(r, BaseException)], str(
                    etcd.current
                )
            finally:
                await etcd.close()

        failed, current = asyncio.run(scenario())
        assert failed == []
        assert current == member.endpoint
    finally:
        member.stop()


def test_a_watch_whose_connection_another_task_closes_says_it_is_lost(tmp_path: Path) -> None:
    """A watch on a client that a failing call of another task closes must
    end with WatchLost (the caller re-reads), never leave its queue silent."""
    import asyncio

    from asterfleet.etcd_client import Etcd, WatchLost
    from asterfleet.etcdtools.server import start_single

    member = start_single(tmp_path / "etcd")
    try:

        async def scenario() -> object:
            etcd = Etcd(f"{member.endpoint},{member.endpoint}")
            try:
                async with etcd.watch_prefix("/af/", 1) as queue:
                    watched = etcd._client
                    assert watched is not None
                    await etcd._drop_client(watched)  # what a failed call does
                    return await asyncio.wait_for(queue.get(), 10)
            finally:
                await etcd.close()

        assert isinstance(asyncio.run(scenario()), WatchLost)
    finally:
        member.stop()


def test_a_watch_on_a_member_cut_off_from_its_leader_ends(tmp_path: Path) -> None:
    """A member that loses its leader (here: the two others frozen) keeps
    its streams open; the client asks for a leader on every call, so the
    watch ends with WatchLost (the caller re-reads elsewhere) instead of
    staying silent while the rest of the cluster moves on."""
    import asyncio
    import os
    import signal

    from asterfleet.etcd_client import Etcd, WatchLost
    from asterfleet.etcdtools.server import start_cluster, stop_all

    members = start_cluster(tmp_path / "etcd", 3)
    frozen: list[int] = []
    try:

        async def scenario() -> object:
            etcd = Etcd(members[0].endpoint)
            try:
                async with etcd.watch_prefix("/af/", 1) as queue:
                    for m in members[1:]:
                        assert m.process is not None and m.process.proc is not None
                        os.kill(m.process.proc.pid, signal.SIGSTOP)
                        frozen.append(m.process.proc.pid)
                    return await asyncio.wait_for(queue.get(), 30)
            finally:
                await etcd.close()

        lost = asyncio.run(scenario())
        assert isinstance(lost, WatchLost)
        assert "no leader" in str(lost)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        stop_all(members)
