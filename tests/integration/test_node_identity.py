"""A node id belongs to one live agent (issue 10, finding 14).

A second agent started with a running node's id is refused (one line,
exit 2) and the first node's record is untouched; a record that disappears
while its agent runs is put back within the TTL, and the agent says why;
an agent that never registered leaves at once on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import EtcdServer, start_single
from asterfleet.fleet.keys import Keyspace
from asterfleet.lab.stack import agent_argv
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

CLUSTER = "ident"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_single(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


def node_agent(
    tmp_path: Path,
    endpoint: str,
    node_id: str,
    name: str,
    sip_port: int = 5999,
    drain_timeout: float = 1,
) -> ManagedProcess:
    return ManagedProcess(
        name,
        agent_argv(
            "node",
            "run",
            "--etcd",
            endpoint,
            "--cluster",
            CLUSTER,
            "--id",
            node_id,
            "--sip-uri",
            f"sip:127.0.0.1:{sip_port};transport=udp",
            "--probe",
            "none",
            "--ttl",
            "3",
            "--drain-timeout",
            str(drain_timeout),
            "--drain-settle",
            "0",
        ),
        tmp_path / f"{name}.log",
    ).start()


def read_record(endpoint: str, node_id: str) -> tuple[dict[str, object], int] | None:
    async def go() -> tuple[dict[str, object], int] | None:
        async with Etcd(endpoint) as client:
            kv = await client.get(Keyspace(CLUSTER).node(node_id))
        return None if kv is None else (json.loads(kv.value), kv.lease)

    return asyncio.run(go())


def delete_record(endpoint: str, node_id: str) -> None:
    async def go() -> None:
        async with Etcd(endpoint) as client:
            await client.delete(Keyspace(CLUSTER).node(node_id))

    asyncio.run(go())


def test_a_second_agent_with_a_live_id_is_refused(tmp_path: Path, etcd: EtcdServer) -> None:
    first = node_agent(tmp_path, etcd.endpoint, "ast1", "first", sip_port=5998)
    try:
        wait_for(lambda: read_record(etcd.endpoint, "ast1"), 60, what="ast1 registered")
        before = read_record(etcd.endpoint, "ast1")
        assert before is not None
        second = node_agent(tmp_path, etcd.endpoint, "ast1", "second", sip_port=5997)
        assert second.proc is not None
        code = second.proc.wait(timeout=30)
        assert code == 2
        lines = [line for line in second.log_path.read_text().splitlines() if "held by" in line]
        assert lines and "'ast1'" in lines[-1] and "another live agent" in lines[-1]
        # The first node's record is still its own (same lease, same URI).
        after = read_record(etcd.endpoint, "ast1")
        assert after is not None
        assert after[1] == before[1]
        assert after[0]["sip_uri"] == "sip:127.0.0.1:5998;transport=udp"
    finally:
        first.stop()


def test_a_deleted_record_is_put_back_within_the_ttl(tmp_path: Path, etcd: EtcdServer) -> None:
    agent = node_agent(tmp_path, etcd.endpoint, "ast2", "agent")
    try:
        wait_for(lambda: read_record(etcd.endpoint, "ast2"), 60, what="ast2 registered")
        delete_record(etcd.endpoint, "ast2")
        # TTL 3 s: the agent checks at every keep-alive (TTL/3).
        wait_for(lambda: read_record(etcd.endpoint, "ast2"), 3, what="ast2 put back")
        wait_for(lambda: "record_restored" in agent.log_path.read_text(), 5, what="restore logged")
        line = next(ln for ln in agent.log_path.read_text().splitlines() if "record_restored" in ln)
        assert "deleted" in line
        assert agent.alive()
    finally:
        agent.stop()


def test_an_agent_that_never_registered_exits_at_once_on_sigterm(tmp_path: Path) -> None:
    # Nothing listens on this port: the agent can never register.
    agent = node_agent(tmp_path, f"127.0.0.1:{free_port()}", "ast3", "lonely", drain_timeout=60)
    try:
        wait_for(lambda: "etcd_unavailable" in agent.log_path.read_text(), 60, what="etcd refused")
        agent.signal(signal.SIGTERM)
        assert agent.proc is not None
        try:
            code = agent.proc.wait(timeout=10)  # not the 60 s drain timeout
        except subprocess.TimeoutExpired:
            pytest.fail("an agent that never registered waited for a drain on SIGTERM")
        assert code == 0
        assert "stopping_unregistered" in agent.log_path.read_text()
    finally:
        agent.stop()
