"""The etcd doctor, the rejoin safety checks and the parsers, from facts alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterfleet.errors import UsageError
from asterfleet.etcdtools.cluster import (
    Alarm,
    ClusterFacts,
    DataDirFacts,
    EndpointFacts,
    Member,
    Status,
    normalize_endpoint,
    parse_members,
    parse_status,
    split_endpoints,
)
from asterfleet.etcdtools.discovery import parse_registrations
from asterfleet.etcdtools.doctor import diagnose
from asterfleet.etcdtools.rejoin import (
    RejoinNotYet,
    RejoinRefused,
    RejoinResult,
    backup_data_dir,
    env_file,
    initial_cluster,
    plan_rejoin,
    plan_when_ready,
    start_flags,
    systemd_dropin,
)

CLUSTER = 0xC1
OTHER = 0xBAD
URL = {name: f"http://127.0.0.1:{2379 + i}" for i, name in enumerate(("m0", "m1", "m2"))}
MEMBERS = tuple(
    Member(i + 1, name, (f"http://127.0.0.1:{2480 + i}",), (URL[name],))
    for i, name in enumerate(("m0", "m1", "m2"))
)


def _status(member_id: int, **kw: object) -> Status:
    base = Status(
        cluster_id=CLUSTER,
        member_id=member_id,
        leader=1,
        raft_term=2,
        raft_index=100,
        raft_applied_index=100,
        db_size=20480,
        db_size_in_use=16384,
        version="3.4.23",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _up(name: str, **kw: object) -> EndpointFacts:
    member = next(m for m in MEMBERS if m.name == name)
    alarms = kw.pop("alarms", ())
    return EndpointFacts(
        URL[name],
        True,
        status=_status(int(kw.pop("member_id", member.id)), **kw),  # type: ignore[call-overload]
        members=MEMBERS,
        alarms=alarms,  # type: ignore[arg-type]
    )


def _down(name: str) -> EndpointFacts:
    return EndpointFacts(URL[name], True, error="connection refused")


def _codes(facts: ClusterFacts) -> list[tuple[str, str]]:
    return [(f.code, f.subject) for f in diagnose(facts).findings]


CASES = [
    ("healthy", [_up("m0"), _up("m1"), _up("m2")], (), []),
    ("one member down", [_up("m0"), _up("m1"), _down("m2")], (), [("member-not-answering", "m2")]),
    (
        "data directory wiped",
        [_up("m0"), _up("m1"), _down("m2")],
        (DataDirFacts("m2", "/var/lib/etcd", True, has_wal=False, has_db=True),),
        [("data-dir-lost", "m2")],
    ),
    (
        "data directory intact: only stopped",
        [_up("m0"), _up("m1"), _down("m2")],
        (DataDirFacts("m2", "/var/lib/etcd", True, has_wal=True, has_db=True),),
        [("member-not-answering", "m2")],
    ),
    (
        "stale data directory from another cluster",
        [_up("m0"), _up("m1"), _up("m2", cluster_id=OTHER, member_id=77, leader=77)],
        (),
        [("cluster-id-mismatch", "m2")],
    ),
    (
        "quorum lost",
        [_up("m0", leader=0), _down("m1"), _down("m2")],
        (),
        [
            ("member-not-answering", "m1"),
            ("member-not-answering", "m2"),
            ("no-leader", "m0"),
            ("quorum-lost", ""),
        ],
    ),
    (
        "NOSPACE alarm",
        [_up("m0", alarms=(Alarm(1, "NOSPACE"),)), _up("m1"), _up("m2")],
        (),
        [("alarm-nospace", "m0")],
    ),
    (
        "CORRUPT alarm",
        [_up("m0"), _up("m1"), _up("m2", alarms=(Alarm(3, "CORRUPT"),))],
        (),
        [("alarm-corrupt", "m2")],
    ),
    (
        "lagging member",
        [_up("m0", raft_applied_index=5000), _up("m1", raft_applied_index=5000), _up("m2")],
        (),
        [("member-lagging", "m2")],
    ),
    (
        "database near its quota",
        [_up("m0", db_size=2 * 1024**3 - 1), _up("m1"), _up("m2")],
        (),
        [("db-size-high", "m0")],
    ),
    (
        "unlisted endpoint that does not answer",
        [_up("m0"), _up("m1"), _up("m2"), EndpointFacts("http://10.9.9.9:2379", True, error="x")],
        (),
        [("endpoint-unreachable", "http://10.9.9.9:2379")],
    ),
    (
        "nothing answers",
        [_down("m0"), _down("m1")],
        (),
        [("no-endpoint-answers", "")],
    ),
]


@pytest.mark.parametrize(
    ("endpoints", "dirs", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_findings(
    endpoints: list[EndpointFacts],
    dirs: tuple[DataDirFacts, ...],
    expected: list[tuple[str, str]],
) -> None:
    assert sorted(_codes(ClusterFacts(tuple(endpoints), dirs))) == sorted(expected)


def test_health_follows_error_findings_and_every_finding_has_a_fix() -> None:
    for _, endpoints, dirs, expected in CASES:
        report = diagnose(ClusterFacts(tuple(endpoints), dirs))
        errors = [f for f in report.findings if f.severity == "error"]
        assert report.healthy == (not errors)
        assert all(f.fix and f.message for f in report.findings)
        if expected:
            assert report.findings


def test_wiped_member_fix_names_the_rejoin_command() -> None:
    facts = ClusterFacts(
        (_up("m0"), _up("m1"), _down("m2")),
        (DataDirFacts("m2", "/data/m2", False, False, False),),
    )
    (finding,) = diagnose(facts).findings
    assert "asterfleet etcd rejoin --member m2 --data-dir /data/m2" in finding.fix
    assert "127.0.0.1:2379,127.0.0.1:2380" in finding.fix


def test_report_json_shape() -> None:
    data = diagnose(ClusterFacts((_up("m0"), _up("m1"), _down("m2")))).to_json()
    assert data["healthy"] is False
    assert data["cluster_id"] == "c1"
    assert [m["name"] for m in data["members"]] == ["m0", "m1", "m2"]
    assert [m["is_leader"] for m in data["members"]] == [True, False, False]


# --- rejoin safety ---------------------------------------------------------


def test_rejoin_plan_for_a_stopped_member() -> None:
    plan = plan_rejoin(ClusterFacts((_up("m0"), _up("m1"), _down("m2"))), "m2")
    assert plan.stale == MEMBERS[2]
    assert plan.peer_urls == MEMBERS[2].peer_urls
    assert plan.via == URL["m0"]  # the leader


@pytest.mark.parametrize(
    ("endpoints", "name", "reason"),
    [
        ((_up("m0"), _down("m1"), _up("m2")), "m2", "would lose the quorum"),
        ((_up("m0"), _down("m1"), _down("m2")), "m2", "would lose the quorum"),
        ((_up("m0"), _up("m1"), _up("m2")), "m2", "still answers"),
        ((_down("m0"),), "m2", "no etcd endpoint answers"),
        # m0, the leader, just died: its peers still name it until they elect another.
        (
            (_down("m0"), _up("m1", leader=1), _up("m2", leader=1)),
            "m0",
            r"no leader: an election is in progress, or quorum is lost; 2 of 3 members "
            r"answer \(m1, m2\)",
        ),
        # Mid-election: no leader named at all.
        (
            (_down("m0"), _up("m1", leader=0), _up("m2", leader=0)),
            "m0",
            "no leader",
        ),
        # With auth on, a member without a leader cannot log the user in: it looks down.
        (
            (_down("m0"), _down("m1"), _up("m2", leader=0)),
            "m0",
            r"no leader: .* 1 of 3 members answer \(m2\)",
        ),
    ],
    ids=[
        "quorum-with-target-up",
        "quorum-already-short",
        "still-running",
        "nothing-answers",
        "dead-leader-still-named",
        "election",
        "election-one-answers",
    ],
)
def test_rejoin_refusals(endpoints: tuple[EndpointFacts, ...], name: str, reason: str) -> None:
    with pytest.raises(RejoinRefused, match=reason):
        plan_rejoin(ClusterFacts(endpoints), name)


def test_only_a_refusal_that_can_pass_by_itself_is_waited_for() -> None:
    election = ClusterFacts((_down("m0"), _up("m1", leader=0), _up("m2", leader=0)))
    settled = ClusterFacts((_down("m0"), _up("m1", leader=2), _up("m2", leader=2)))
    seen = [election, election, election, settled]
    heard: list[str] = []
    plan = plan_when_ready(lambda: seen.pop(0), "m0", wait=30, progress=heard.append, interval=0)
    assert plan.via == URL["m1"]  # the new leader
    assert not seen
    # One line per change of what it waits for, not one per check.
    assert len(heard) == 1 and heard[0].startswith("rejoin m0: waiting for a leader; 2 of 3")

    running = ClusterFacts((_up("m0"), _up("m1"), _up("m2")))
    calls: list[int] = []

    def gather() -> ClusterFacts:
        calls.append(1)
        return running

    with pytest.raises(RejoinRefused, match="still answers") as refused:
        plan_when_ready(gather, "m2", wait=30, interval=0)
    assert not isinstance(refused.value, RejoinNotYet) and len(calls) == 1

    with pytest.raises(RejoinNotYet, match=r"no leader.*\(re-checked for") as waited:
        plan_when_ready(lambda: election, "m0", wait=0.05, interval=0.01)
    assert waited.value.waiting_for.startswith("a leader")
    with pytest.raises(RejoinNotYet) as once:
        plan_when_ready(lambda: election, "m0", wait=0)
    assert "re-checked" not in str(once.value)


def test_rejoin_of_an_unlisted_member_needs_its_peer_url() -> None:
    facts = ClusterFacts((_up("m0"), _up("m1"), _up("m2")))
    with pytest.raises(UsageError, match="--peer-url"):
        plan_rejoin(facts, "m3")
    plan = plan_rejoin(facts, "m3", ("http://127.0.0.1:2490",))
    assert plan.stale is None


def test_initial_cluster_names_the_new_member() -> None:
    new = Member(99, "", ("http://127.0.0.1:2482",), ())
    text = initial_cluster([MEMBERS[0], MEMBERS[1], new], "m2", 99)
    assert text == ("m0=http://127.0.0.1:2480,m1=http://127.0.0.1:2481,m2=http://127.0.0.1:2482")


def test_start_flags_env_file_and_dropin() -> None:
    result = RejoinResult("m2", 99, "m0=http://a:1,m2=http://b:2", Path("/var/lib/etcd"), None)
    assert start_flags(result) == [
        "--name=m2",
        "--data-dir=/var/lib/etcd",
        "--initial-cluster=m0=http://a:1,m2=http://b:2",
        "--initial-cluster-state=existing",
    ]
    assert "ETCD_INITIAL_CLUSTER_STATE=existing\n" in env_file(result)
    dropin = systemd_dropin(result)
    assert dropin.splitlines()[1] == "[Service]"
    assert 'Environment="ETCD_NAME=m2"' in dropin


def test_backup_moves_the_data_directory_aside(tmp_path: Path) -> None:
    data = tmp_path / "etcd"
    (data / "member").mkdir(parents=True)
    backup = backup_data_dir(data)
    assert backup is not None and (backup / "member").is_dir()
    assert not data.exists()
    assert backup_data_dir(data) is None  # nothing left to back up


# --- parsers ---------------------------------------------------------------


def test_parse_gateway_replies() -> None:
    status = parse_status(
        {
            "header": {"cluster_id": "11827037702631963284", "member_id": "5"},
            "leader": "5",
            "raftIndex": "13",
            "raftTerm": "2",
            "dbSize": "20480",
            "version": "3.4.23",
        }
    )
    assert status.cluster_id == 11827037702631963284 and status.leader == 5
    members = parse_members({"members": [{"ID": "7", "peerURLs": ["http://x:1"]}]})
    assert members == [Member(7, "", ("http://x:1",), ())]
    assert not members[0].started


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:2379", "http://127.0.0.1:2379"),
        ("http://etcd-1:2379/", "http://etcd-1:2379"),
        ("https://10.0.0.1:2379", "https://10.0.0.1:2379"),
    ],
)
def test_normalize_endpoint(given: str, expected: str) -> None:
    assert normalize_endpoint(given) == expected


@pytest.mark.parametrize("bad", ["", "127.0.0.1", "ftp://h:1", "h:99999", "http://h:1/x"])
def test_bad_endpoints_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        normalize_endpoint(bad)


def test_split_endpoints_dedupes() -> None:
    assert split_endpoints(["a:1,b:2", "a:1"]) == ["http://a:1", "http://b:2"]


@given(st.text(max_size=40))
def test_normalize_endpoint_never_crashes(text: str) -> None:
    try:
        url = normalize_endpoint(text)
    except UsageError:
        return
    assert url.startswith(("http://", "https://"))


def test_parse_registrations() -> None:
    node = {
        "nodes": [
            {"key": "/_etcd/registry/t/2c2b", "value": "d1=http://127.0.0.1:2"},
            {"key": "/_etcd/registry/t/1a1a", "value": "d0=http://127.0.0.1:1"},
        ]
    }
    regs = parse_registrations(node)
    assert [(r.name, r.member_id, r.peer_urls) for r in regs] == [
        ("d0", "1a1a", ("http://127.0.0.1:1",)),
        ("d1", "2c2b", ("http://127.0.0.1:2",)),
    ]


@given(
    st.lists(
        st.fixed_dictionaries(
            {"key": st.text(max_size=20), "value": st.text(max_size=30)},
            optional={"dir": st.booleans()},
        ),
        max_size=5,
    )
)
def test_parse_registrations_accepts_any_listing(nodes: list[dict[str, object]]) -> None:
    assert len(parse_registrations({"nodes": nodes})) <= len(nodes)
