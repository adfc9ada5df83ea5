"""A small typed client for etcd's cluster and maintenance API, and the
gathering of facts that :mod:`~asterfleet.etcdtools.doctor` diagnoses.

It speaks etcd's gRPC API through :mod:`~asterfleet.etcdtools.transport`
(the generated stubs, not ``aetcd.Client``), with replies in the JSON
gateway's shape, because:

- every answer carries its response header, and the header is what the
  doctor needs: ``cluster_id`` and ``member_id`` of the member that answered.
  ``aetcd.Client.status()`` drops the header (it returns version, DB size,
  leader, raft index and term only), so a member of another cluster would
  be invisible;
- the calls are synchronous with one deadline per request, so probing a dead
  member costs one bounded attempt and needs no event loop (aetcd waits for
  a channel to become ready first);
- the JSON gateway itself, which it spoke before, refuses every client
  certificate with a common name under ``--client-cert-auth``; the paths
  (``/v3/maintenance/status`` …) still name the calls, as in etcd's docs.

64-bit ids arrive as decimal strings (the JSON encoding of uint64);
they are kept as ints and shown in hex, like ``etcdctl``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asterfleet.errors import EtcdUnavailable, UsageError
from asterfleet.etcdtools.transport import EtcdRequestError, Transport

if TYPE_CHECKING:
    from asterfleet.etcd_client import EtcdSecurity

DEFAULT_TIMEOUT = 2.0

__all__ = ["EtcdRequestError"]  # re-exported: callers catch it from here


def normalize_endpoint(endpoint: str, tls: bool = False) -> str:
    """``127.0.0.1:2379`` or ``http://127.0.0.1:2379/`` → ``http://127.0.0.1:2379``
    (``https://`` for a bare HOST:PORT with ``tls``)."""
    text = endpoint.strip().rstrip("/")
    if not text:
        raise UsageError("empty etcd endpoint: give HOST:PORT, e.g. 127.0.0.1:2379")
    if "://" not in text:
        text = f"{'https' if tls else 'http'}://{text}"
    scheme, _, rest = text.partition("://")
    if scheme not in ("http", "https") or not rest or "/" in rest:
        raise UsageError(f"etcd endpoint {endpoint!r}: expected HOST:PORT or http(s)://HOST:PORT")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"etcd endpoint {endpoint!r}: expected HOST:PORT with a port 1-65535")
    return text


def split_endpoints(values: Iterable[str], tls: bool = False) -> list[str]:
    """Endpoints from repeated and/or comma-separated options, normalised, deduplicated."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                url = normalize_endpoint(part, tls)
                if url not in out:
                    out.append(url)
    if not out:
        raise UsageError("no etcd endpoint given: use --endpoints HOST:PORT[,HOST:PORT…]")
    return out


def _int(value: Any) -> int:
    return int(value) if value not in (None, "") else 0


@dataclass(frozen=True)
class Member:
    """One entry of the member list."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    @property
    def started(self) -> bool:
        """False for a member added but never started (no name, no client URL)."""
        return bool(self.name or self.client_urls)

    @property
    def hex_id(self) -> str:
        return f"{self.id:x}"


@dataclass(frozen=True)
class Alarm:
    member_id: int
    alarm: str  # NOSPACE, CORRUPT


@dataclass(frozen=True)
class Status:
    """``/v3/maintenance/status`` of one member, with its response header."""

    cluster_id: int
    member_id: int
    leader: int
    raft_term: int
    raft_index: int
    raft_applied_index: int
    db_size: int
    db_size_in_use: int
    version: str
    errors: tuple[str, ...] = ()
    is_learner: bool = False


def parse_members(reply: dict[str, Any]) -> list[Member]:
    return [
        Member(
            id=_int(m.get("ID")),
            name=str(m.get("name", "")),
            peer_urls=tuple(m.get("peerURLs") or ()),
            client_urls=tuple(m.get("clientURLs") or ()),
            is_learner=bool(m.get("isLearner", False)),
        )
        for m in reply.get("members") or ()
    ]


def parse_status(reply: dict[str, Any]) -> Status:
    header = reply.get("header") or {}
    return Status(
        cluster_id=_int(header.get("cluster_id")),
        member_id=_int(header.get("member_id")),
        leader=_int(reply.get("leader")),
        raft_term=_int(reply.get("raftTerm")),
        raft_index=_int(reply.get("raftIndex")),
        raft_applied_index=_int(reply.get("raftAppliedIndex")),
        db_size=_int(reply.get("dbSize")),
        db_size_in_use=_int(reply.get("dbSizeInUse")),
        version=str(reply.get("version", "")),
        errors=tuple(str(e) for e in reply.get("errors") or ()),
        is_learner=bool(reply.get("isLearner", False)),
    )


def parse_alarms(reply: dict[str, Any]) -> list[Alarm]:
    return [
        Alarm(member_id=_int(a.get("memberID")), alarm=str(a.get("alarm", "NONE")))
        for a in reply.get("alarms") or ()
    ]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return base64.b64encode(b"\0").decode()
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


class EtcdClient:
    """One etcd endpoint, with the command's TLS and user
    (:mod:`asterfleet.etcdtools.transport`)."""

    def __init__(
        self,
        endpoint: str,
        timeout: float = DEFAULT_TIMEOUT,
        security: EtcdSecurity | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.transport = transport or Transport(security, timeout)
        self.url = normalize_endpoint(endpoint, self.transport.tls)
        self.timeout = timeout

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.transport.call(self.url, path, body)

    def status(self) -> Status:
        return parse_status(self._post("/v3/maintenance/status", {}))

    def members(self) -> list[Member]:
        return parse_members(self._post("/v3/cluster/member/list", {}))

    def alarms(self) -> list[Alarm]:
        return parse_alarms(self._post("/v3/maintenance/alarm", {"action": "GET"}))

    def add_member(self, peer_urls: Sequence[str]) -> tuple[Member, list[Member]]:
        """Add a member; (the new member, the whole list after the change)."""
        reply = self._post("/v3/cluster/member/add", {"peerURLs": list(peer_urls)})
        added = parse_members({"members": [reply.get("member") or {}]})[0]
        return added, parse_members(reply)

    def remove_member(self, member_id: int) -> list[Member]:
        """Remove a member by id; the list after the change."""
        return parse_members(self._post("/v3/cluster/member/remove", {"ID": str(member_id)}))

    def put(self, key: str, value: str) -> None:
        self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def get_prefix(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its value (linearizable read)."""
        reply = self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in reply.get("kvs") or ()
        }


# --------------------------------------------------------------------------
# Facts for the doctor
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointFacts:
    """What one client URL answered (or the error it gave)."""

    endpoint: str
    #: True for endpoints the operator named; False for client URLs found
    #: in a member list.
    given: bool
    status: Status | None = None
    members: tuple[Member, ...] | None = None
    alarms: tuple[Alarm, ...] = ()
    #: Why the endpoint is not reachable.
    error: str | None = None
    #: Requests that failed although the member answered its status.
    problems: tuple[str, ...] = ()

    @property
    def reachable(self) -> bool:
        return self.status is not None


@dataclass(frozen=True)
class DataDirFacts:
    """A member's data directory on this machine, as far as files tell."""

    name: str
    path: str
    exists: bool
    has_wal: bool
    has_db: bool


@dataclass(frozen=True)
class ClusterFacts:
    endpoints: tuple[EndpointFacts, ...]
    data_dirs: tuple[DataDirFacts, ...] = field(default=())


def probe_endpoint(
    endpoint: str,
    given: bool,
    timeout: float = DEFAULT_TIMEOUT,
    transport: Transport | None = None,
    alarms: bool = True,
) -> EndpointFacts:
    """What ``endpoint`` answers. Only status decides reachability: the alarm
    list goes through raft and blocks while there is no leader, which is
    itself a finding, not a reason to call the member unreachable. Without
    ``alarms`` (the rejoin needs none) a member without a leader costs no
    wait of ``timeout``."""
    client = EtcdClient(endpoint, timeout, transport=transport)
    try:
        status = client.status()
    except (EtcdUnavailable, EtcdRequestError) as exc:
        return EndpointFacts(client.url, given, error=str(exc))
    problems: list[str] = []
    members: tuple[Member, ...] | None = None
    raised: tuple[Alarm, ...] = ()
    try:
        members = tuple(client.members())
    except (EtcdUnavailable, EtcdRequestError) as exc:
        problems.append(f"member list: {exc}")
    if alarms:
        try:
            raised = tuple(client.alarms())
        except (EtcdUnavailable, EtcdRequestError) as exc:
            problems.append(f"alarm list: {exc}")
    return EndpointFacts(
        client.url, given, status=status, members=members, alarms=raised, problems=tuple(problems)
    )


def inspect_data_dir(name: str, path: Path) -> DataDirFacts:
    member = path / "member"
    wal = member / "wal"
    return DataDirFacts(
        name=name,
        path=str(path),
        exists=path.is_dir(),
        has_wal=wal.is_dir() and any(wal.glob("*.wal")),
        has_db=(member / "snap" / "db").is_file(),
    )


def gather_facts(
    endpoints: Sequence[str],
    data_dirs: Sequence[tuple[str, Path]] = (),
    timeout: float = DEFAULT_TIMEOUT,
    security: EtcdSecurity | None = None,
    alarms: bool = True,
) -> ClusterFacts:
    """Probe every given endpoint, then every client URL their member lists name
    (and their alarms, unless ``alarms`` is False)."""
    transport = Transport(security, timeout)
    try:
        return _gather(transport, endpoints, data_dirs, timeout, alarms)
    finally:
        transport.close()


def _gather(
    transport: Transport,
    endpoints: Sequence[str],
    data_dirs: Sequence[tuple[str, Path]],
    timeout: float,
    alarms: bool = True,
) -> ClusterFacts:
    seen: dict[str, EndpointFacts] = {}
    for endpoint in endpoints:
        url = normalize_endpoint(endpoint, transport.tls)
        if url not in seen:
            seen[url] = probe_endpoint(url, True, timeout, transport, alarms)
    listed: list[str] = []
    for facts in list(seen.values()):
        for member in facts.members or ():
            listed.extend(member.client_urls)
    for url in listed:
        try:
            url = normalize_endpoint(url)
        except UsageError:
            continue
        if url not in seen:
            seen[url] = probe_endpoint(url, False, timeout, transport, alarms)
    return ClusterFacts(
        endpoints=tuple(seen.values()),
        data_dirs=tuple(inspect_data_dir(name, path) for name, path in data_dirs),
    )
