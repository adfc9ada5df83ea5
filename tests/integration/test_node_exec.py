"""`asterfleet node exec ID -- CLI-COMMAND`: through etcd to the node's agent,
over its AMI session, with who asked and when kept as the record."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import start_single
from asterfleet.fleet.keys import Keyspace
from asterfleet.node.agent import NodeAgent, NodeAgentConfig
from asterfleet.node.ami import AmiSession
from asterfleet.node.calls import AmiCounter
from tests.fake_ami import VERSION, AmiUser, FakeAmi

pytestmark = pytest.mark.integration


async def exec_on_node(
    endpoint: str, write: set[str], *command: str
) -> tuple[int, str, str, list[dict[str, object]]]:
    ami = await FakeAmi({"asterfleet": AmiUser("s3cret", write=write)}).start()
    cfg = NodeAgentConfig(
        etcd=endpoint,
        cluster="x",
        node_id="ast1",
        sip_uri="sip:127.0.0.1:5999;transport=udp",
        probe="none",
        drain_timeout=0.5,
        drain_settle=0,
    )
    session = AmiSession("127.0.0.1", ami.port, "asterfleet", "s3cret", timeout=2)
    agent = NodeAgent(cfg, AmiCounter(session))
    shutdown = asyncio.Event()
    running = asyncio.create_task(agent.run(shutdown))
    try:
        for _ in range(200):
            if agent.registered and session.calls is not None:
                break
            await asyncio.sleep(0.05)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asterfleet", "node", "exec", "--etcd", endpoint,
            "--cluster", "x", "--by", "tester", "--timeout", "60", "ast1", "--", *command,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        async with Etcd(endpoint) as etcd:
            snap = await etcd.get_prefix(Keyspace("x").execs_of("ast1"))
        records = [json.loads(kv.value) for kv in snap.items]
    finally:
        shutdown.set()
        await asyncio.wait_for(running, 30)
        await ami.stop()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), records


def test_node_exec_runs_the_command_and_records_who(tmp_path: Path) -> None:
    server = start_single(tmp_path / "etcd")
    try:
        code, out, err, records = asyncio.run(
            exec_on_node(server.endpoint, {"reporting", "command"}, "core", "show", "version")
        )
        assert code == 0, err
        assert f"Asterisk {VERSION}" in out
        (record,) = records
        assert record["command"] == "core show version" and record["by"] == "tester"
        assert record["state"] == "done"
        assert float(str(record["at"])) <= float(str(record["done_at"]))

        # An AMI user without write=command: refused, and said so.
        code, out, err, records = asyncio.run(
            exec_on_node(server.endpoint, {"reporting"}, "core", "show", "version")
        )
        assert code == 1
        assert "Permission denied" in out and "refused" in err
    finally:
        server.stop()
