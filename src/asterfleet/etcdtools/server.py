"""Run real etcd members on loopback (tests, the lab, the repair drills).

:class:`EtcdServer` is one member: a name, a data directory, a client and a
peer URL on 127.0.0.1, and the bootstrap flags (``--initial-cluster``,
``--initial-cluster-state``, or ``--discovery``). It runs as a
:class:`~asterfleet.runtime.process.ManagedProcess` logging to
``<work_dir>/<name>.log``.

- :func:`start_single` starts a one-member cluster and waits until it serves.
- :func:`plan_cluster` allocates ports for N members that know each other;
  :func:`start_cluster` starts them and waits until every one is healthy.

Health is etcd's own ``GET /health`` on the client URL: ``{"health":"true"}``
once the member sees a leader and has no alarm (etcd 3.4.23).
"""

from __future__ import annotations

import secrets
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from asterfleet.errors import AsterfleetError
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for

HOST = "127.0.0.1"


class EtcdStartError(AsterfleetError):
    """An etcd member exited or did not become healthy in time."""


@dataclass(frozen=True)
class ServerTls:
    """Client-side TLS of a member: its certificate, and the CA whose client
    certificates it accepts (``--client-cert-auth``: the certificate's
    common name is the etcd user when no password token is sent).
    ``probe_cert``/``probe_key`` is a client certificate for the health check."""

    ca: Path
    cert: Path
    key: Path
    probe_cert: Path
    probe_key: Path


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different free TCP ports on 127.0.0.1.

    The sockets stay bound until all are chosen: asking for free ports one
    at a time can return the same port twice.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _initial_cluster_text(initial_cluster: str | Mapping[str, str]) -> str:
    if isinstance(initial_cluster, str):
        return initial_cluster
    return ",".join(f"{name}={url}" for name, url in initial_cluster.items())


class EtcdServer:
    """One etcd member on loopback.

    ``initial_cluster`` is ``name=peerURL,…`` (or a mapping name → peer URL);
    None means a cluster of this member alone. With ``discovery`` (a
    discovery URL, see :mod:`asterfleet.etcdtools.discovery`) the member
    bootstraps from the token instead and no ``--initial-cluster`` is passed.
    Ports default to free ones chosen now, so ``endpoint`` and ``peer_url``
    are known before :meth:`start`.
    """

    def __init__(
        self,
        work_dir: Path,
        name: str = "etcd0",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | Mapping[str, str] | None = None,
        initial_cluster_state: str = "new",
        extra_args: Sequence[str] = (),
        *,
        data_dir: Path | None = None,
        cluster_token: str | None = None,
        discovery: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        if initial_cluster_state not in ("new", "existing"):
            raise ValueError(
                f"initial_cluster_state {initial_cluster_state!r}: use 'new' or 'existing'"
            )
        self.etcd = require_binary("etcd")
        self.work_dir = Path(work_dir)
        self.name = name
        if client_port is None or peer_port is None:
            spare = iter(distinct_free_ports(2))
            client_port = client_port if client_port is not None else next(spare)
            peer_port = peer_port if peer_port is not None else next(spare)
        self.client_port = client_port
        self.peer_port = peer_port
        self.initial_cluster = (
            _initial_cluster_text(initial_cluster)
            if initial_cluster is not None
            else f"{name}={self.peer_url}"
        )
        self.initial_cluster_state = initial_cluster_state
        self.extra_args = list(extra_args)
        self.data_dir = data_dir if data_dir is not None else self.work_dir / f"{name}.etcd"
        # A token unique per cluster keeps two test clusters from ever
        # mistaking each other's peers for their own.
        self.cluster_token = cluster_token or f"af-{secrets.token_hex(6)}"
        self.discovery = discovery
        self.tls = tls
        self.log_path = self.work_dir / f"{name}.log"
        self.process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, the form ``aetcd`` and ``--endpoints`` take."""
        return f"{HOST}:{self.client_port}"

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    def argv(self) -> list[str]:
        argv = [
            self.etcd,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster-token",
            self.cluster_token,
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        if self.discovery is not None:
            argv += ["--discovery", self.discovery]
        else:
            argv += [
                "--initial-cluster",
                self.initial_cluster,
                "--initial-cluster-state",
                self.initial_cluster_state,
            ]
        if self.tls is not None:
            argv += [
                "--cert-file",
                str(self.tls.cert),
                "--key-file",
                str(self.tls.key),
                "--trusted-ca-file",
                str(self.tls.ca),
                "--client-cert-auth",
            ]
        return argv + self.extra_args

    def start(self) -> EtcdServer:
        """Start the member (no wait; see :meth:`wait_healthy`)."""
        if self.alive():
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(f"etcd-{self.name}", self.argv(), self.log_path).start()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def healthy(self, timeout: float = 1.0) -> bool:
        """True when ``GET /health`` answers ``{"health": "true"}``."""
        try:
            if self.tls is None:
                reply = httpx.get(f"{self.client_url}/health", timeout=timeout)
            else:
                context = ssl.create_default_context(cafile=str(self.tls.ca))
                context.load_cert_chain(str(self.tls.probe_cert), str(self.tls.probe_key))
                reply = httpx.get(f"{self.client_url}/health", timeout=timeout, verify=context)
            return reply.status_code == 200 and reply.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def wait_healthy(self, timeout: float = 20.0) -> EtcdServer:
        """Wait until the member serves; EtcdStartError with its log if not."""

        # An exited member ends the wait at once instead of at the timeout.
        try:
            wait_for(
                lambda: not self.alive() or self.healthy(),
                timeout,
                interval=0.1,
                what=f"etcd member {self.name} healthy",
            )
        except TimeoutError as exc:
            raise EtcdStartError(f"{exc}\n{self.log_tail(20)}") from exc
        if not self.alive():
            code = self.process.proc.returncode if self.process and self.process.proc else None
            raise EtcdStartError(f"etcd member {self.name} exited with {code}\n{self.log_tail(20)}")
        return self

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM (then SIGKILL); the exit code, None if never started."""
        return self.process.stop(grace) if self.process is not None else None

    def kill(self) -> None:
        """SIGKILL: a crash, for failure drills."""
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout: float = 20.0) -> EtcdServer:
        """Stop, start on the same data directory, wait until healthy."""
        self.stop()
        return self.start().wait_healthy(timeout)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else ""

    def __enter__(self) -> EtcdServer:
        return self.start().wait_healthy()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_single(work_dir: Path, name: str = "etcd0", timeout: float = 20.0) -> EtcdServer:
    """A one-member etcd on free loopback ports, started and healthy."""
    server = EtcdServer(work_dir, name=name)
    server.start()
    try:
        return server.wait_healthy(timeout)
    except BaseException:
        server.stop()
        raise


def plan_cluster(
    work_dir: Path,
    size: int = 3,
    prefix: str = "m",
    *,
    tls: ServerTls | None = None,
    extra_args: Sequence[str] = (),
) -> list[EtcdServer]:
    """``size`` members (``m0``, ``m1``, …) that list each other; not started.
    ``tls``: every member serves its clients over TLS (peers stay plain)."""
    if size < 1:
        raise ValueError(f"cluster size {size}: must be at least 1")
    token = f"af-{secrets.token_hex(6)}"
    flat = distinct_free_ports(2 * size)
    ports = [(flat[2 * i], flat[2 * i + 1]) for i in range(size)]
    initial = {f"{prefix}{i}": f"http://{HOST}:{peer}" for i, (_, peer) in enumerate(ports)}
    return [
        EtcdServer(
            work_dir,
            name=f"{prefix}{i}",
            client_port=client,
            peer_port=peer,
            initial_cluster=initial,
            cluster_token=token,
            tls=tls,
            extra_args=extra_args,
        )
        for i, (client, peer) in enumerate(ports)
    ]


def start_cluster(
    work_dir: Path,
    size: int = 3,
    prefix: str = "m",
    timeout: float = 30.0,
    *,
    tls: ServerTls | None = None,
    extra_args: Sequence[str] = (),
) -> list[EtcdServer]:
    """Start :func:`plan_cluster` members together and wait until all are healthy."""
    members = plan_cluster(work_dir, size, prefix, tls=tls, extra_args=extra_args)
    try:
        for member in members:
            member.start()
        for member in members:
            member.wait_healthy(timeout)
    except BaseException:
        stop_all(members)
        raise
    return members


def stop_all(members: Sequence[EtcdServer]) -> None:
    """Stop every member, ignoring ones never started."""
    for member in members:
        member.stop()
