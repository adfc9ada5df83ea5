"""Diagnose an etcd cluster from gathered facts: pure, no I/O.

:func:`diagnose` takes :class:`~asterfleet.etcdtools.cluster.ClusterFacts`
(what every endpoint answered, and optionally what local data directories
contain) and returns a :class:`Report`: one row per member and a list of
findings, each with a severity and the fix to apply. ``error`` findings make
the cluster unhealthy (non-zero exit from ``asterfleet etcd doctor``).

The cluster is the cluster ID most endpoints agree on. A member that answers
with another cluster ID was started on a data directory from another cluster:
the modern form of the original "raft internal error" story, where a member
"remembered" a dead cluster. A member whose data directory was deleted while
it was still listed exits at start with "member … has already been
bootstrapped" (etcd 3.4.23): it shows here as a listed member that does not
answer, and the fix is a rejoin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from asterfleet.etcdtools.cluster import ClusterFacts, DataDirFacts, EndpointFacts, Member

Severity = Literal["error", "warning", "info"]

#: etcd's default backend quota (``--quota-backend-bytes``), 2 GiB.
DEFAULT_QUOTA_BYTES = 2 * 1024**3
#: Warn when the DB uses more than this share of the quota.
DB_SIZE_WARN_RATIO = 0.8
#: Warn when a member's applied index trails the highest one by more than this.
LAG_WARN_ENTRIES = 1000


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    #: The member name (or endpoint) the finding is about; "" for the cluster.
    subject: str
    message: str
    fix: str


@dataclass(frozen=True)
class MemberRow:
    """One line of the member table."""

    name: str
    id: str
    endpoint: str
    reachable: bool
    is_leader: bool = False
    raft_term: int | None = None
    raft_index: int | None = None
    db_size: int | None = None
    alarms: tuple[str, ...] = ()
    cluster_id: str | None = None


@dataclass(frozen=True)
class Report:
    cluster_id: str | None
    members: tuple[MemberRow, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "cluster_id": self.cluster_id,
            "members": [asdict(m) for m in self.members],
            "findings": [asdict(f) for f in self.findings],
        }


def _hex(value: int) -> str:
    return f"{value:x}"


def majority_cluster(reachable: Sequence[EndpointFacts]) -> int | None:
    """The cluster ID most answering endpoints report (ties: one with a leader)."""
    if not reachable:
        return None
    counts = Counter(e.status.cluster_id for e in reachable if e.status)
    best = max(counts.values())
    tied = [cid for cid, n in counts.items() if n == best]
    for e in reachable:
        if e.status and e.status.cluster_id in tied and e.status.leader:
            return e.status.cluster_id
    return tied[0]


def member_list(ours: Sequence[EndpointFacts]) -> tuple[Member, ...]:
    """The member list of the most advanced member that gave one."""
    listing = [e for e in ours if e.members is not None]
    if not listing:
        return ()
    best = max(listing, key=lambda e: e.status.raft_index if e.status else -1)
    return best.members or ()


def _endpoint_of(member: Member, by_url: dict[str, EndpointFacts]) -> EndpointFacts | None:
    for url in member.client_urls:
        facts = by_url.get(url.rstrip("/"))
        if facts is not None:
            return facts
    return None


def _rejoin_fix(name: str, endpoints: Sequence[str], data_dir: str | None = None) -> str:
    eps = ",".join(e.removeprefix("http://") for e in endpoints) or "HOST:PORT"
    return (
        f"stop etcd on {name}, then run `asterfleet etcd rejoin --member {name} "
        f"--data-dir {data_dir or 'DATA_DIR'} --endpoints {eps}` (it backs the data "
        "directory up, removes and re-adds the member) and start etcd with the flags it prints"
    )


def diagnose(
    facts: ClusterFacts,
    quota_bytes: int = DEFAULT_QUOTA_BYTES,
) -> Report:
    """Every finding about the cluster in ``facts``, worst first."""
    findings: list[Finding] = []
    reachable = [e for e in facts.endpoints if e.reachable]
    dirs: dict[str, DataDirFacts] = {d.name: d for d in facts.data_dirs}

    cluster = majority_cluster(reachable)
    if cluster is None:
        findings.append(
            Finding(
                "no-endpoint-answers",
                "error",
                "",
                "no etcd endpoint answered: "
                + "; ".join(f"{e.endpoint}: {e.error}" for e in facts.endpoints),
                "check --endpoints; start etcd on at least a quorum of the members",
            )
        )
        unreachable = tuple(MemberRow("", "", e.endpoint, False) for e in facts.endpoints)
        return Report(None, unreachable, tuple(findings))

    ours = [e for e in reachable if e.status and e.status.cluster_id == cluster]
    good_endpoints = [e.endpoint for e in ours]
    members = member_list(ours)
    by_url = {e.endpoint: e for e in facts.endpoints}
    voters = [m for m in members if not m.is_learner]
    leaders = {e.status.leader for e in ours if e.status}
    raft_max = max((e.status.raft_applied_index for e in ours if e.status), default=0)
    listed_urls = {u.rstrip("/") for m in members for u in m.client_urls}

    rows: list[MemberRow] = []
    answering_voters = 0
    for member in members:
        ep = _endpoint_of(member, by_url)
        status = ep.status if ep else None
        name = member.name or f"(unstarted {member.hex_id})"
        same_cluster = status is not None and status.cluster_id == cluster
        alarms = tuple(
            sorted(
                {
                    a.alarm
                    for e in ours
                    for a in e.alarms
                    if a.member_id == member.id and a.alarm != "NONE"
                }
            )
        )
        rows.append(
            MemberRow(
                name=name,
                id=member.hex_id,
                endpoint=ep.endpoint if ep else ",".join(member.client_urls),
                reachable=status is not None,
                is_leader=member.id in leaders,
                raft_term=status.raft_term if status else None,
                raft_index=status.raft_index if status else None,
                db_size=status.db_size if status else None,
                alarms=alarms,
                cluster_id=_hex(status.cluster_id) if status else None,
            )
        )
        if same_cluster and not member.is_learner:
            answering_voters += 1
        findings.extend(_alarm_findings(member, alarms, good_endpoints, dirs))

        if not member.started:
            findings.append(
                Finding(
                    "member-unstarted",
                    "warning",
                    name,
                    f"member {member.hex_id} (peer {', '.join(member.peer_urls)}) was added "
                    "but has never started; it counts against the quorum",
                    "start it with --initial-cluster-state existing and the --initial-cluster "
                    "printed when it was added, or remove it with "
                    f"`etcdctl member remove {member.hex_id}`",
                )
            )
            continue
        if status is None:
            findings.append(_not_answering(member, ep, good_endpoints, dirs.get(member.name)))
            continue
        if status.cluster_id != cluster:
            findings.append(
                Finding(
                    "cluster-id-mismatch",
                    "error",
                    member.name,
                    f"{ep.endpoint if ep else member.name} answers as member "
                    f"{_hex(status.member_id)} of cluster {_hex(status.cluster_id)}, but "
                    f"{member.name} is listed in cluster {_hex(cluster)}: its data "
                    "directory belongs to another cluster",
                    _rejoin_fix(
                        member.name,
                        good_endpoints,
                        dirs[member.name].path if member.name in dirs else None,
                    ),
                )
            )
            continue
        if status.member_id != member.id:
            findings.append(
                Finding(
                    "member-id-mismatch",
                    "error",
                    member.name,
                    f"{ep.endpoint if ep else member.name} answers as member "
                    f"{_hex(status.member_id)}, but the list has {member.name} as "
                    f"{member.hex_id}",
                    _rejoin_fix(member.name, good_endpoints),
                )
            )
            continue
        if status.leader == 0:
            findings.append(
                Finding(
                    "no-leader",
                    "error",
                    member.name,
                    f"{member.name} sees no leader (term {status.raft_term})",
                    "check that a quorum of members is running and that their peer URLs "
                    "reach each other",
                )
            )
        if raft_max - status.raft_applied_index > LAG_WARN_ENTRIES:
            findings.append(
                Finding(
                    "member-lagging",
                    "warning",
                    member.name,
                    f"{member.name} has applied index {status.raft_applied_index}, "
                    f"{raft_max - status.raft_applied_index} behind the most advanced member",
                    "check its disk and network; it catches up by itself if both are fine",
                )
            )
        if status.db_size > quota_bytes * DB_SIZE_WARN_RATIO:
            findings.append(
                Finding(
                    "db-size-high",
                    "warning",
                    member.name,
                    f"{member.name} database is {status.db_size} bytes, over "
                    f"{int(DB_SIZE_WARN_RATIO * 100)}% of the {quota_bytes}-byte quota",
                    "compact old revisions (`etcdctl compact REV`) and defragment "
                    f"(`etcdctl defrag --endpoints {ep.endpoint if ep else ''}`)",
                )
            )

    for e in ours:
        for problem in e.problems:
            findings.append(
                Finding(
                    "request-failed",
                    "warning",
                    e.endpoint,
                    f"{e.endpoint} answered its status but not its {problem}",
                    "usually a leader election in progress; run the doctor again",
                )
            )
    if len({lead for lead in leaders if lead}) > 1:
        findings.append(
            Finding(
                "leader-disagreement",
                "warning",
                "",
                "members name different leaders: "
                + ", ".join(sorted(_hex(lead) for lead in leaders if lead)),
                "usually an election in progress; if it persists, check peer connectivity",
            )
        )
    quorum = len(voters) // 2 + 1
    if voters and answering_voters < quorum:
        findings.append(
            Finding(
                "quorum-lost",
                "error",
                "",
                f"only {answering_voters} of {len(voters)} voting members answer; "
                f"{quorum} are needed for a quorum",
                "start the stopped members with their data directories intact; if fewer "
                "than a quorum can come back, restore a snapshot "
                "(`etcdctl snapshot restore`) into a new cluster",
            )
        )

    for e in facts.endpoints:
        if e.given and not e.reachable and e.endpoint not in listed_urls:
            findings.append(
                Finding(
                    "endpoint-unreachable",
                    "error",
                    e.endpoint,
                    f"endpoint {e.endpoint} does not answer and is not a listed member: {e.error}",
                    "check the address in --endpoints, or start the etcd that should be there",
                )
            )
        elif e.status and e.endpoint not in listed_urls and e.status.cluster_id != cluster:
            findings.append(
                Finding(
                    "cluster-id-mismatch",
                    "error",
                    e.endpoint,
                    f"{e.endpoint} answers as cluster {_hex(e.status.cluster_id)}, the "
                    f"others as {_hex(cluster)}: it belongs to another cluster",
                    "if it should be a member here, stop it, move its data directory "
                    "aside and rejoin it; otherwise remove it from --endpoints",
                )
            )
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order[f.severity], f.code, f.subject))
    return Report(_hex(cluster), tuple(rows), tuple(findings))


def _alarm_findings(
    member: Member,
    alarms: Sequence[str],
    good_endpoints: Sequence[str],
    dirs: dict[str, DataDirFacts],
) -> list[Finding]:
    out: list[Finding] = []
    name = member.name or member.hex_id
    if "NOSPACE" in alarms:
        out.append(
            Finding(
                "alarm-nospace",
                "error",
                name,
                f"NOSPACE alarm on {name}: the database reached its quota and the "
                "cluster accepts only reads and deletes",
                "compact (`etcdctl compact REV`), defragment every member "
                "(`etcdctl defrag`), then `etcdctl alarm disarm`; raise "
                "--quota-backend-bytes if the data really needs the room",
            )
        )
    if "CORRUPT" in alarms:
        out.append(
            Finding(
                "alarm-corrupt",
                "error",
                name,
                f"CORRUPT alarm on {name}: its data differs from the other members",
                _rejoin_fix(name, good_endpoints, dirs[name].path if name in dirs else None)
                + "; disarm the alarm (`etcdctl alarm disarm`) only after that",
            )
        )
    return out


def _not_answering(
    member: Member,
    ep: EndpointFacts | None,
    good_endpoints: Sequence[str],
    data_dir: DataDirFacts | None,
) -> Finding:
    where = ep.endpoint if ep else ",".join(member.client_urls)
    if data_dir is not None and not (data_dir.has_wal and data_dir.has_db):
        state = "does not exist" if not data_dir.exists else "holds no etcd data"
        return Finding(
            "data-dir-lost",
            "error",
            member.name,
            f"{member.name} is listed but does not answer at {where}, and its data "
            f"directory {data_dir.path} {state}: it can never restart as the listed "
            "member (etcd exits with 'member … has already been bootstrapped')",
            _rejoin_fix(member.name, good_endpoints, data_dir.path),
        )
    return Finding(
        "member-not-answering",
        "error",
        member.name,
        f"{member.name} ({member.hex_id}) is listed but does not answer at {where}"
        + (f": {ep.error}" if ep and ep.error else ""),
        f"start etcd on {member.name}; if it exits with 'has already been bootstrapped' "
        "or a raft log error, its data directory was lost or is stale: "
        + _rejoin_fix(member.name, good_endpoints),
    )
