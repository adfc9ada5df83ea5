"""Rejoin a member whose data directory is lost or stale: the safe form of
"stop etcd, delete its cached state, rejoin".

1. :func:`plan_rejoin` (pure) checks, from gathered facts, that the repair
   is safe: the member's etcd is stopped, the members left running keep
   a quorum of the cluster while the member is away, and one of them leads.
   It refuses otherwise. :func:`plan_when_ready` gathers the facts again for
   a bounded few seconds while the refusal is one that can pass by itself
   (:class:`RejoinNotYet`): right after a leader dies, its peers elect a new
   one, and with etcd auth on a member without a leader cannot even log the
   command's user in, so it looks down for that second or two.
2. :func:`execute` moves the data directory aside (the backup), removes the
   stale member through a healthy member, adds it back with the same peer
   URLs (retrying while etcd still calls the cluster "unhealthy" right after
   the removal) and returns the flags to start it with.
3. :func:`start_flags`, :func:`env_file` and :func:`systemd_dropin` render
   those flags for a shell, an ``EnvironmentFile`` or a systemd drop-in.

A member re-added this way starts with ``--initial-cluster-state existing``
on an empty data directory and receives a snapshot from the leader: no key
is lost because the data lives on the quorum, not on the rejoining member.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from asterfleet.errors import AsterfleetError, EtcdUnavailable, UsageError
from asterfleet.etcdtools.cluster import (
    ClusterFacts,
    EndpointFacts,
    EtcdClient,
    EtcdRequestError,
    Member,
    normalize_endpoint,
)
from asterfleet.etcdtools.doctor import majority_cluster, member_list

if TYPE_CHECKING:
    from asterfleet.etcd_client import EtcdSecurity

#: How long member add is retried while etcd answers "unhealthy cluster"
#: (seen for ~5 s after a member remove on etcd 3.4.23).
ADD_RETRY_SECONDS = 30.0


class RejoinRefused(AsterfleetError):
    """The rejoin would be unsafe; nothing was changed."""


class RejoinNotYet(RejoinRefused):
    """Refused for now, for a reason that can pass by itself (an election, a
    member coming back); ``waiting_for`` says what, in a few words."""

    def __init__(self, message: str, waiting_for: str) -> None:
        super().__init__(message)
        self.waiting_for = waiting_for


@dataclass(frozen=True)
class RejoinPlan:
    name: str
    #: The stale member to remove (None when it is no longer listed).
    stale: Member | None
    peer_urls: tuple[str, ...]
    #: A healthy member's client URL that performs the change.
    via: str
    cluster_id: int


@dataclass(frozen=True)
class RejoinResult:
    name: str
    member_id: int
    initial_cluster: str
    data_dir: Path
    backup: Path | None

    def flags(self) -> list[str]:
        return start_flags(self)


def plan_rejoin(facts: ClusterFacts, name: str, peer_urls: Sequence[str] = ()) -> RejoinPlan:
    """Check that rejoining ``name`` is safe; RejoinRefused (nothing changed) if not,
    RejoinNotYet when the same check may pass a few seconds later."""
    reachable = [e for e in facts.endpoints if e.reachable]
    cluster = majority_cluster(reachable)
    if cluster is None:
        raise RejoinNotYet(
            "no etcd endpoint answers: a rejoin needs a healthy quorum; check --endpoints",
            "an etcd endpoint to answer",
        )
    ours = [e for e in reachable if e.status and e.status.cluster_id == cluster]
    members = member_list(ours)
    if not members:
        raise RejoinNotYet(
            "no member answered the member list; run the doctor and retry",
            "a member list",
        )
    stale = next((m for m in members if m.name == name), None)
    by_url = {e.endpoint: e for e in facts.endpoints}

    if stale is not None:
        running = _answering(stale, by_url)
        urls = tuple(peer_urls) or stale.peer_urls
    else:
        running = None
        urls = tuple(peer_urls)
        if not urls:
            raise UsageError(
                f"member {name!r} is not in the member list ("
                + ", ".join(m.name or m.hex_id for m in members)
                + "): give its peer URL with --peer-url to add it"
            )

    voters = [m for m in members if not m.is_learner]
    if stale is None or stale.is_learner:
        voters.append(Member(0, name, urls, ()))
    quorum = len(voters) // 2 + 1
    answering = [
        m
        for m in voters
        if m.started
        and (e := _answering(m, by_url)) is not None
        and e.status is not None
        and e.status.cluster_id == cluster
    ]
    # While the member is away every other voter that answers keeps the quorum.
    others_up = [m for m in answering if m.name != name]
    # A leader only counts while it answers itself: right after it dies its
    # peers still name it until they elect another.
    answering_ids = {e.status.member_id for e in ours if e.status}
    leaders = [
        e
        for e in ours
        if e.status and e.status.member_id == e.status.leader and e.status.leader in answering_ids
    ]
    seen = (
        f"{len(answering)} of {len(voters)} members answer ("
        + (", ".join(m.name for m in answering) or "none")
        + ")"
    )
    if not leaders:
        raise RejoinNotYet(
            f"refusing to rejoin {name}: no leader: an election is in progress, or quorum "
            f"is lost; {seen}. Retry in a few seconds; if it stays so, run "
            "`asterfleet etcd doctor`",
            f"a leader; {seen}",
        )
    if len(others_up) < quorum:
        up = ", ".join(m.name for m in others_up) or "none"
        raise RejoinNotYet(
            f"refusing to rejoin {name}: the cluster has {len(voters)} voting members and "
            f"needs {quorum} for a quorum, but only {len(others_up)} other members answer "
            f"({up}); removing {name} would lose the quorum. Bring the stopped members "
            "back first",
            f"{quorum} members besides {name}; {seen}",
        )
    if running is not None:
        raise RejoinRefused(
            f"refusing to rejoin {name}: etcd still answers at {running.endpoint}; stop it "
            "first (e.g. `systemctl stop etcd`), then run the rejoin again"
        )
    # The leader performs the change: membership changes go through it anyway.
    return RejoinPlan(name, stale, urls, leaders[0].endpoint, cluster)


def plan_when_ready(
    gather: Callable[[], ClusterFacts],
    name: str,
    peer_urls: Sequence[str] = (),
    wait: float = 10.0,
    progress: Callable[[str], None] | None = None,
    interval: float = 0.25,
) -> RejoinPlan:
    """:func:`plan_rejoin` on fresh facts from ``gather`` until it passes, for up to
    ``wait`` seconds while the refusal is a :class:`RejoinNotYet`; ``progress`` hears
    what it waits for each time that changes. The last refusal, if it never passes."""
    started = time.monotonic()
    last = ""
    while True:
        facts = gather()
        try:
            return plan_rejoin(facts, name, peer_urls)
        except RejoinNotYet as exc:
            waited = time.monotonic() - started
            if waited >= wait:
                if wait > 0:
                    exc.args = (f"{exc} (re-checked for {waited:.1f} s)",)
                raise
            if progress is not None and exc.waiting_for != last:
                progress(
                    f"rejoin {name}: waiting for {exc.waiting_for} [{waited:.1f} s of {wait:g} s]"
                )
            last = exc.waiting_for
            time.sleep(min(interval, wait - waited))


def _answering(member: Member, by_url: dict[str, EndpointFacts]) -> EndpointFacts | None:
    for url in member.client_urls:
        facts = by_url.get(url.rstrip("/"))
        if facts is not None and facts.reachable:
            return facts
    return None


def backup_data_dir(data_dir: Path, now: datetime | None = None) -> Path | None:
    """Move ``data_dir`` aside to ``<dir>.bak-<UTC time>``; None if there was nothing."""
    if not data_dir.exists():
        return None
    if data_dir.is_dir() and not any(data_dir.iterdir()):
        data_dir.rmdir()
        return None
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    backup = data_dir.with_name(f"{data_dir.name}.bak-{stamp}")
    n = 1
    while backup.exists():
        backup = data_dir.with_name(f"{data_dir.name}.bak-{stamp}-{n}")
        n += 1
    data_dir.rename(backup)
    return backup


def initial_cluster(members: Sequence[Member], name: str, new_id: int) -> str:
    """``name=peerURL,…`` for every member (the new, still unnamed one as ``name``)."""
    parts: list[str] = []
    for m in sorted(members, key=lambda m: (m.name or name) if m.id == new_id else m.name):
        member_name = name if m.id == new_id else m.name
        if not member_name:
            raise RejoinRefused(
                f"member {m.hex_id} has no name (added but never started): start or remove "
                "it before rejoining another member"
            )
        parts.extend(f"{member_name}={url}" for url in m.peer_urls)
    return ",".join(parts)


def execute(
    plan: RejoinPlan,
    data_dir: Path,
    timeout: float = 5.0,
    add_retry_seconds: float = ADD_RETRY_SECONDS,
    security: EtcdSecurity | None = None,
) -> RejoinResult:
    """Back up ``data_dir``, remove the stale member, add it back; the start flags.
    With auth on, ``security`` must name a user who may change membership (root)."""
    client = EtcdClient(plan.via, timeout, security)
    backup = backup_data_dir(data_dir)
    if plan.stale is not None:
        client.remove_member(plan.stale.id)
    deadline = time.monotonic() + add_retry_seconds
    while True:
        try:
            added, members = client.add_member(plan.peer_urls)
            break
        except (EtcdRequestError, EtcdUnavailable) as exc:
            # "unhealthy cluster" for a few seconds after the removal.
            if time.monotonic() >= deadline:
                raise AsterfleetError(
                    f"member {plan.name} was removed but could not be added back: {exc}. "
                    f"Add it by hand: etcdctl --endpoints {plan.via} member add {plan.name} "
                    f"--peer-urls={','.join(plan.peer_urls)}"
                ) from exc
            time.sleep(0.5)
    return RejoinResult(
        name=plan.name,
        member_id=added.id,
        initial_cluster=initial_cluster(members, plan.name, added.id),
        data_dir=data_dir,
        backup=backup,
    )


def start_flags(result: RejoinResult) -> list[str]:
    return [
        f"--name={result.name}",
        f"--data-dir={result.data_dir}",
        f"--initial-cluster={result.initial_cluster}",
        "--initial-cluster-state=existing",
    ]


def _env(result: RejoinResult) -> list[tuple[str, str]]:
    return [
        ("ETCD_NAME", result.name),
        ("ETCD_DATA_DIR", str(result.data_dir)),
        ("ETCD_INITIAL_CLUSTER", result.initial_cluster),
        ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
    ]


def env_file(result: RejoinResult) -> str:
    """An ``EnvironmentFile`` (etcd reads ``ETCD_<FLAG>`` variables)."""
    lines = [f"# written by asterfleet etcd rejoin for member {result.name}"]
    lines += [f"{key}={value}" for key, value in _env(result)]
    return "\n".join(lines) + "\n"


def systemd_dropin(result: RejoinResult) -> str:
    """A drop-in for ``etcd.service`` (``/etc/systemd/system/etcd.service.d/``).

    Environment variables, not ExecStart: the unit's own command line stays
    as packaged, and etcd refuses a flag given both ways, so the unit must
    not also pass these as flags.
    """
    lines = [f"# written by asterfleet etcd rejoin for member {result.name}", "[Service]"]
    lines += [f'Environment="{key}={value}"' for key, value in _env(result)]
    return "\n".join(lines) + "\n"


def parse_peer_urls(values: Sequence[str]) -> tuple[str, ...]:
    """Validate ``--peer-url`` values (``http://HOST:PORT``)."""
    urls: list[str] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            if "://" not in part:
                raise UsageError(f"peer URL {part!r}: expected http://HOST:PORT")
            urls.append(normalize_endpoint(part))
    return tuple(urls)
