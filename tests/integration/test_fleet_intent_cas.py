"""Operator intent is changed by compare-and-swap: two writers on one node
(an operator's drain and a rollout's weight change, or two consoles) never
undo each other, and a malformed admin record is reported, not replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.errors import RecordError
from asterfleet.etcd_client import Etcd, WatchEvent
from asterfleet.etcdtools.server import EtcdServer, start_single
from asterfleet.fleet import actions
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import AdminIntent, NodeRecord, NodeState, parse_admin

pytestmark = pytest.mark.integration

KS = Keyspace("cas")
CHANGES = 100


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_single(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


async def _register(etcd: Etcd, node_id: str) -> None:
    rec = NodeRecord(id=node_id, sip_uri="sip:127.0.0.1:5099;transport=udp", state=NodeState.ACTIVE)
    await etcd.put(KS.node(node_id), rec.to_json())


MARKER = KS.prefix + "marker"


async def _history(etcd: Etcd, key: str, since: int) -> list[AdminIntent]:
    """Every version the admin record went through, in order, up to the end marker."""
    seen: list[AdminIntent] = []
    async with etcd.watch_prefix(KS.prefix, since) as queue:
        while True:
            ev = await asyncio.wait_for(queue.get(), 10)
            assert isinstance(ev, WatchEvent), ev
            if ev.key == MARKER:
                return seen
            if ev.key == key:
                seen.append(AdminIntent() if ev.kind == "delete" else parse_admin(key, ev.value))


def test_two_writers_interleaving_drain_and_weight_lose_no_change(
    etcd_server: EtcdServer,
) -> None:
    async def run() -> tuple[list[AdminIntent], AdminIntent]:
        async with (
            Etcd(etcd_server.endpoint) as setup,
            Etcd(etcd_server.endpoint) as operator,
            Etcd(etcd_server.endpoint) as rollout,
        ):
            await _register(setup, "ast1")
            start = await setup.get_prefix(KS.prefix)

            async def drains() -> None:
                # drain, undrain, drain, ...: ends drained.
                for i in range(CHANGES):
                    if i % 2 == 0:
                        await actions.undrain(operator, KS, "ast1", "alice")
                    else:
                        await actions.drain(operator, KS, "ast1", "alice")

            async def weights() -> None:
                for w in range(1, CHANGES + 1):
                    await actions.set_weight(rollout, KS, "ast1", w, "rollout:r1")

            await asyncio.gather(drains(), weights())
            await setup.put(MARKER, b"end")
            history = await _history(setup, KS.admin_of("ast1"), start.revision + 1)
            final = await actions.read_intent(setup, KS, "ast1")
            return history, final

    history, final = asyncio.run(run())
    # No write undid the other writer's field: each version keeps what the
    # other writer last set.
    assert len(history) >= 2 * CHANGES - 1  # an undrain of nothing writes nothing
    previous = AdminIntent()
    for version in history:
        if version.by == "rollout:r1":
            assert version.drain == previous.drain, "a weight change undid a drain"
        else:
            assert version.weight == previous.weight, "a drain undid a weight change"
        previous = version
    assert final.drain is True
    assert final.weight == CHANGES
    # The actor is kept exactly as the caller gave it.
    assert {v.by for v in history} <= {"alice", "rollout:r1", ""}


def test_a_malformed_admin_record_is_reported_not_replaced(etcd_server: EtcdServer) -> None:
    async def run() -> tuple[str, bytes | None]:
        async with Etcd(etcd_server.endpoint) as etcd:
            await _register(etcd, "ast2")
            await etcd.put(KS.admin_of("ast2"), b'{"drain": "perhaps"}')
            with pytest.raises(RecordError) as err:
                await actions.set_weight(etcd, KS, "ast2", 5, "alice")
            kv = await etcd.get(KS.admin_of("ast2"))
            return str(err.value), kv.value if kv else None

    message, stored = asyncio.run(run())
    assert KS.admin_of("ast2") in message
    assert "etcdctl" in message  # says what to do
    assert stored == b'{"drain": "perhaps"}'  # left as it was, for the operator to see
