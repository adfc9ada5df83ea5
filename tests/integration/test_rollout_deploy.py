"""Continuous deployment: a knot's passed build starts a rollout of the image
it pushed, on a real etcd, signed with the knot and build number."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import EtcdServer, start_single
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, NodeState
from asterfleet.rollout.deploy import start_for_build
from asterfleet.rollout.model import Rollout, RolloutState, Target
from asterfleet.rollout.operations import get_rollout

pytestmark = pytest.mark.integration
KS = Keyspace("prod")
IMAGE = "127.0.0.1:5000/ops/asterisk:22.1.0"


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_single(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


def test_a_passed_build_starts_a_rollout_of_its_image(etcd_server: EtcdServer) -> None:
    async def register() -> None:
        async with Etcd(etcd_server.endpoint) as etcd:
            for i in (1, 2):
                rec = NodeRecord(
                    id=f"ast{i}",
                    sip_uri=f"sip:127.0.0.1:{5070 + i};transport=udp",
                    state=NodeState.ACTIVE,
                    labels={"image": "127.0.0.1:5000/ops/asterisk:22.0.0"},
                )
                await etcd.put(KS.node(rec.id), rec.to_json())

    async def read() -> Rollout:
        async with Etcd(etcd_server.endpoint) as etcd:
            return await get_rollout(etcd, KS)

    asyncio.run(register())
    line = start_for_build(etcd_server.endpoint, "prod", IMAGE, "knot:asterisk-22#7")
    assert line.startswith("rollout r") and f"2 node(s) to {IMAGE}" in line
    r = asyncio.run(read())
    assert r.target == Target(image=IMAGE)
    assert r.state is RolloutState.RUNNING
    assert r.created_by == "knot:asterisk-22#7"
    assert [n.id for n in r.nodes] == ["ast1", "ast2"]
    assert r.gate_calls == 5

    # The next build while that rollout runs does not start a second one.
    again = start_for_build(etcd_server.endpoint, "prod", IMAGE, "knot:asterisk-22#8")
    assert "not started" in again and "finish, resume or abort it first" in again


def test_without_etcd_or_image_the_build_log_says_why(etcd_server: EtcdServer) -> None:
    assert "no --etcd" in start_for_build(None, "prod", IMAGE, "knot:k#1")
    assert "pushed no image" in start_for_build(etcd_server.endpoint, "prod", None, "knot:k#1")
    empty = start_for_build(etcd_server.endpoint, "prod", IMAGE, "knot:k#1")
    assert "has no registered node" in empty
