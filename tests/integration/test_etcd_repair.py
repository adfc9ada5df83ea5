"""etcd membership repair against real three-member clusters on loopback.

The original's "raft internal error" story in its etcd 3.4 form: a member
whose cached state is gone (or belongs to another cluster) cannot come back
by itself; the doctor names the problem and the rejoin repairs it without
losing a key.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from asterfleet.cli.etcd import app as etcd_app
from asterfleet.errors import UsageError
from asterfleet.etcdtools import discovery
from asterfleet.etcdtools.cluster import EtcdClient, gather_facts
from asterfleet.etcdtools.doctor import diagnose
from asterfleet.etcdtools.rejoin import RejoinRefused, plan_rejoin
from asterfleet.etcdtools.server import (
    EtcdServer,
    start_cluster,
    start_single,
    stop_all,
)
from asterfleet.runtime.process import wait_for

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[EtcdServer]]:
    members = start_cluster(tmp_path / "c", 3)
    try:
        yield members
    finally:
        stop_all(members)


def _endpoints(members: list[EtcdServer]) -> str:
    return ",".join(m.endpoint for m in members)


def test_single_member_serves_keys_and_survives_a_restart(tmp_path: Path) -> None:
    server = start_single(tmp_path)
    try:
        assert server.endpoint == f"127.0.0.1:{server.client_port}"
        EtcdClient(server.endpoint).put("a", "1")
        server.restart()
        assert EtcdClient(server.endpoint).get_prefix("a") == {"a": "1"}
        server.kill()
        assert not server.alive()
        assert not server.healthy()
    finally:
        server.stop()


def test_wiped_member_is_diagnosed_and_rejoined_without_losing_keys(
    cluster: list[EtcdServer], tmp_path: Path
) -> None:
    m0, _, m2 = cluster
    client = EtcdClient(m0.endpoint)
    keys = {f"/asterfleet/t/k{i:03d}": f"v{i}" for i in range(50)}
    for key, value in keys.items():
        client.put(key, value)

    # The original's mistake: stop etcd, delete its state, start it again.
    m2.kill()
    shutil.rmtree(m2.data_dir)
    m2.start()
    wait_for(lambda: not m2.alive(), 15, what="the wiped member to give up")
    assert "has already been bootstrapped" in m2.log_tail(5)
    # If m2 led, the other two elect a new leader first.
    wait_for(lambda: client.status().leader, 15, what="a leader among m0 and m1")

    doctor = runner.invoke(
        etcd_app,
        ["doctor", "--endpoints", m0.endpoint, "--data-dir", f"m2={m2.data_dir}", "--json"],
    )
    assert doctor.exit_code == 1, doctor.output
    report = json.loads(doctor.output)
    assert not report["healthy"]
    lost = [f for f in report["findings"] if f["code"] == "data-dir-lost"]
    assert [f["subject"] for f in lost] == ["m2"]
    assert "asterfleet etcd rejoin --member m2" in lost[0]["fix"]

    env_file = tmp_path / "m2.env"
    rejoin = runner.invoke(
        etcd_app,
        [
            "rejoin",
            "--member",
            "m2",
            "--data-dir",
            str(m2.data_dir),
            "--endpoints",
            _endpoints(cluster),
            "--env-file",
            str(env_file),
            "--json",
        ],
    )
    assert rejoin.exit_code == 0, rejoin.output
    result = json.loads(rejoin.output)
    assert "--initial-cluster-state=existing" in result["flags"]
    assert f"ETCD_INITIAL_CLUSTER={result['initial_cluster']}" in env_file.read_text()

    back = EtcdServer(
        m2.work_dir,
        name="m2",
        client_port=m2.client_port,
        peer_port=m2.peer_port,
        initial_cluster=result["initial_cluster"],
        initial_cluster_state="existing",
    )
    back.log_path = m2.work_dir / "m2-rejoined.log"
    cluster[2] = back  # stopped by the fixture
    back.start().wait_healthy(30)

    report_after = diagnose(gather_facts([m0.endpoint]))
    assert report_after.healthy, report_after.findings
    assert sorted(m.name for m in report_after.members) == ["m0", "m1", "m2"]
    # Read through the rejoined member itself: it has every key.
    assert EtcdClient(back.endpoint).get_prefix("/asterfleet/t/") == keys


def test_member_on_another_clusters_data_dir_is_a_cluster_id_mismatch(
    cluster: list[EtcdServer], tmp_path: Path
) -> None:
    stranger = start_single(tmp_path / "other", name="m2")
    stranger.stop()
    m2 = cluster[2]
    m2.stop()
    stale = EtcdServer(
        m2.work_dir,
        name="m2",
        client_port=m2.client_port,
        peer_port=m2.peer_port,
        initial_cluster=m2.initial_cluster,
        data_dir=stranger.data_dir,
    )
    stale.log_path = m2.work_dir / "m2-stale.log"
    cluster[2] = stale
    stale.start().wait_healthy(20)  # it happily runs as its old one-member cluster

    report = diagnose(gather_facts([cluster[0].endpoint]))
    assert not report.healthy
    mismatch = [f for f in report.findings if f.code == "cluster-id-mismatch"]
    assert [f.subject for f in mismatch] == ["m2"]
    assert "belongs to another cluster" in mismatch[0].message
    assert "rejoin" in mismatch[0].fix


def test_rejoin_refuses_when_the_quorum_would_be_lost(cluster: list[EtcdServer]) -> None:
    leader_id = EtcdClient(cluster[0].endpoint).status().leader
    leader = next(m for m in cluster if EtcdClient(m.endpoint).status().member_id == leader_id)
    target, stopped = [m for m in cluster if m is not leader]
    stopped.stop()  # a follower: no election, the leader stays
    facts = gather_facts([leader.endpoint, target.endpoint])
    with pytest.raises(RejoinRefused, match="would lose the quorum"):
        plan_rejoin(facts, target.name)

    def rejoin(wait: str) -> Result:
        return runner.invoke(
            etcd_app,
            ["rejoin", "--member", target.name, "--data-dir", str(target.data_dir),
             "--endpoints", f"{leader.endpoint},{target.endpoint}", "--wait", wait],
        )  # fmt: skip

    refused = rejoin("1")
    assert refused.exit_code == 1
    assert "would lose the quorum" in refused.stderr
    assert "re-checked for" in refused.stderr  # it waited for the member to come back
    assert (target.data_dir / "member").is_dir()  # nothing was touched
    members = sorted(m.name for m in EtcdClient(leader.endpoint).members())
    assert members == ["m0", "m1", "m2"]

    # With the leader gone too, no leader can be elected: it says what it saw.
    leader.kill()  # no leadership handed over, as when its machine dies
    refused = rejoin("3")
    assert refused.exit_code == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert "no leader: an election is in progress, or quorum is lost" in last
    assert f"1 of 3 members answer ({target.name})" in last
    assert (target.data_dir / "member").is_dir()


def test_three_members_bootstrap_from_a_discovery_token(tmp_path: Path) -> None:
    registry = EtcdServer(tmp_path / "registry", name="registry", extra_args=["--enable-v2=true"])
    members: list[EtcdServer] = []
    try:
        registry.start().wait_healthy()
        made = runner.invoke(
            etcd_app, ["discovery", "new", "--size", "3", "--etcd", registry.endpoint, "--json"]
        )
        assert made.exit_code == 0, made.output
        url = json.loads(made.output)["url"]
        assert url.startswith(f"{registry.client_url}/v2/keys/_etcd/registry/")

        members = [EtcdServer(tmp_path / "new", name=f"d{i}", discovery=url) for i in range(3)]
        for member in members:
            member.start()
        for member in members:
            member.wait_healthy(30)

        listed = EtcdClient(members[0].endpoint).members()
        assert sorted(m.name for m in listed) == ["d0", "d1", "d2"]
        token = discovery.show(url)
        assert token.size == 3
        assert sorted(r.name for r in token.registered) == ["d0", "d1", "d2"]
        assert diagnose(gather_facts([members[0].endpoint])).healthy

        # A discovery etcd without the v2 API is refused with the flag to add.
        with pytest.raises(UsageError, match="--enable-v2=true"):
            discovery.new_token(members[0].endpoint, 3)
    finally:
        stop_all(members)
        registry.stop()


def test_doctor_cli_reports_a_healthy_cluster(cluster: list[EtcdServer]) -> None:
    shown = runner.invoke(etcd_app, ["doctor", "--endpoints", cluster[0].endpoint])
    assert shown.exit_code == 0, shown.output
    assert "healthy" in shown.output
    leader = httpx.post(f"{cluster[0].client_url}/v3/maintenance/status", json={}, timeout=3)
    assert leader.status_code == 200
