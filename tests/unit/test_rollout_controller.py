"""The rollout controller's shell: one pass reads etcd, acts, and records
what it did; without etcd it does nothing and waits."""

from __future__ import annotations

import asyncio

from asterfleet.errors import EtcdUnavailable
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import BalancerStatus, parse_admin
from asterfleet.rollout.controller import ControllerConfig, RolloutController
from asterfleet.rollout.model import NodeProgress, Phase, Rollout, Target, parse_rollout
from tests.unit.console_fakes import FakeEtcd, put_node

KS = Keyspace("c")


def setup() -> FakeEtcd:
    etcd = FakeEtcd()
    put_node(etcd, KS, "ast1", version="1", active_calls=0)
    put_node(etcd, KS, "ast2", version="1", active_calls=0)
    r = Rollout(
        id="r1",
        cluster="c",
        target=Target(version="2"),
        nodes=[NodeProgress(id=n, target=Target(version="2")) for n in ("ast1", "ast2")],
    )
    asyncio.run(etcd.put(KS.rollout("r1"), r.to_json()))
    return etcd


def stored(etcd: FakeEtcd) -> Rollout:
    kv = etcd.data[KS.rollout("r1")]
    return parse_rollout(kv.key, kv.value)


def test_a_pass_drains_the_first_node_as_the_rollout_and_records_it() -> None:
    etcd = setup()
    controller = RolloutController(etcd, ControllerConfig("c"))  # type: ignore[arg-type]
    asyncio.run(controller.reconcile())
    r = stored(etcd)
    assert [n.phase for n in r.nodes] == [Phase.DRAINING, Phase.PENDING]
    intent = parse_admin("k", etcd.data[KS.admin_of("ast1")].value)
    assert intent.drain and intent.by == "rollout:r1"
    assert r.nodes[0].drain_revision == etcd.data[KS.admin_of("ast1")].mod_revision
    assert r.nodes[0].previous == Target(version="1")

    # Again: the drain is not yet applied by the balancer: nothing changes.
    balancer = BalancerStatus(id="lb1", revision=r.nodes[0].drain_revision - 1)
    asyncio.run(etcd.put(KS.balancer("lb1"), balancer.to_json()))
    before = etcd.data[KS.rollout("r1")].mod_revision
    asyncio.run(controller.reconcile())
    assert etcd.data[KS.rollout("r1")].mod_revision == before


def test_a_replace_that_cannot_run_is_counted_and_the_node_waits_to_be_rolled_back() -> None:
    etcd = setup()
    controller = RolloutController(etcd, ControllerConfig("c"))  # type: ignore[arg-type]
    for _ in range(3):  # drain, then (idle, no balancer) replace: which fails
        asyncio.run(controller.reconcile())
    r = stored(etcd)
    assert r.nodes[0].phase is Phase.REPLACING and r.nodes[0].replace_issued
    assert "has no 'replace' label and the controller no --replace" in r.nodes[0].message
    assert controller.metrics.actions.labels("replace", "failed")._value.get() >= 1


class DownEtcd(FakeEtcd):
    async def get_prefix(self, prefix: str):  # type: ignore[no-untyped-def]
        raise EtcdUnavailable("etcd at 127.0.0.1:2379 did not answer")


def test_an_etcd_outage_pauses_everything_and_the_loop_keeps_running() -> None:
    etcd = DownEtcd()
    controller = RolloutController(etcd, ControllerConfig("c", interval=0.05))  # type: ignore[arg-type]

    async def run_briefly() -> int:
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop))
        await asyncio.sleep(0.3)
        stop.set()
        return await task

    assert asyncio.run(run_briefly()) == 0
    assert controller.metrics.etcd_up._value.get() == 0
    assert etcd.data == {}  # nothing written, nothing decided
