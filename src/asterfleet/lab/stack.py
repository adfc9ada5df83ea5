"""A whole asterfleet cluster on one machine, on loopback.

etcd, one Kamailio load balancer with the generated config and its balancer
agent, N nodes (SIPp UAS standing in for Asterisk, each with its
node agent) and call load. `asterfleet lab` runs it for people; the
integration tests run it to check what a user would check.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from asterfleet.etcdtools.server import (
    EtcdServer,
    ServerTls,
    start_cluster,
    start_single,
)
from asterfleet.fleet.dispatcher_list import Algorithm
from asterfleet.kamailio.config import KamailioConfig
from asterfleet.kamailio.rpc import DispatcherDestination, call_sync, parse_dispatcher_list
from asterfleet.kamailio.server import KamailioServer
from asterfleet.runtime.ports import free_port, free_port_both
from asterfleet.runtime.process import ManagedProcess, wait_for
from asterfleet.sipp.runner import SippUac, SippUas

if TYPE_CHECKING:
    from asterfleet.etcd_client import EtcdSecurity


def agent_argv(*args: str) -> list[str]:
    """Run an asterfleet command with this very interpreter."""
    return [sys.executable, "-m", "asterfleet", *args]


@dataclass
class LabNode:
    """One node: a SIPp UAS and its node agent."""

    node_id: str
    uas: SippUas
    agent: ManagedProcess
    weight: int

    @property
    def sip_uri(self) -> str:
        return self.uas.sip_uri


@dataclass
class StackOptions:
    cluster: str = "lab"
    algorithm: Algorithm = Algorithm.WEIGHT
    node_ttl: int = 3
    drain_timeout: float = 60.0
    capture: str | None = None
    # The HEP capture id Kamailio sends, published by the balancer agent (the
    # console names the balancer on call ladders by it).
    capture_id: int = 1
    kamailio_children: int = 4
    etcd_members: int = 1  # 3 or 5 for a real cluster (agents get every endpoint)
    kamailio_shm_mb: int | None = None
    # JSON-RPC over HTTP too: dispatcher.list of ~1,000 nodes is larger than
    # a datagram can carry.
    rpc_http: bool = False
    kamailio_log_level: str = "info"
    log_level: str = "info"
    # etcd with client-certificate TLS and auth on (`etcd secure`'s roles):
    # each part logs in with a certificate whose common name is its user.
    secure_etcd: bool = False


#: The roles `asterfleet etcd secure` makes, as CLUSTER-ROLE users.
ETCD_ROLES = ("node", "balancer", "operator", "capture")


@dataclass(frozen=True)
class EtcdCredentials:
    """The lab's local CA and a certificate per etcd user (CLUSTER-ROLE, root)."""

    ca: Path
    directory: Path
    cluster: str

    def pair(self, role: str) -> tuple[Path, Path]:
        name = "root" if role == "root" else f"{self.cluster}-{role}"
        return self.directory / f"{name}.crt", self.directory / f"{name}.key"

    def args(self, role: str) -> tuple[str, ...]:
        cert, key = self.pair(role)
        return ("--etcd-cacert", str(self.ca), "--etcd-cert", str(cert), "--etcd-key", str(key))

    def env(self, role: str) -> dict[str, str]:
        cert, key = self.pair(role)
        return {
            "ASTERFLEET_ETCD_CACERT": str(self.ca),
            "ASTERFLEET_ETCD_CERT": str(cert),
            "ASTERFLEET_ETCD_KEY": str(key),
        }


@dataclass
class Stack:
    work_dir: Path
    options: StackOptions = field(default_factory=StackOptions)
    etcd: EtcdServer | None = None
    etcd_cluster: list[EtcdServer] = field(default_factory=list)
    kamailio: KamailioServer | None = None
    balancer: ManagedProcess | None = None
    nodes: dict[str, LabNode] = field(default_factory=dict)
    callers: list[SippUac] = field(default_factory=list)
    sip_port: int = 0
    run_dir: Path | None = None  # short path for unix sockets
    credentials: EtcdCredentials | None = None  # with options.secure_etcd

    # -- parts -------------------------------------------------------------

    def start_etcd(self) -> EtcdServer:
        tls = self._make_credentials() if self.options.secure_etcd else None
        if self.options.etcd_members > 1 or tls is not None:
            self.etcd_cluster = start_cluster(
                self.work_dir / "etcd",
                self.options.etcd_members,
                tls=tls,
                # Its users log in by certificate; their passwords are random
                # tokens no one types, so etcd's default bcrypt cost (10, made
                # for human passwords) would only slow `lab up` (by ~1 s).
                extra_args=["--bcrypt-cost=4"] if tls is not None else [],
            )
            self.etcd = self.etcd_cluster[0]
        else:
            self.etcd = start_single(self.work_dir / "etcd")
            self.etcd_cluster = [self.etcd]
        if tls is not None:
            self._secure_etcd()
        return self.etcd

    def _make_credentials(self) -> ServerTls:
        from asterfleet.etcdtools.pki import LocalCa

        directory = self.work_dir / "etcd-pki"
        ca = LocalCa(directory, "asterfleet lab CA", days=365)
        member = ca.issue("etcd-member", server=True)
        root = ca.issue("root")
        for role in ETCD_ROLES:
            ca.issue(f"{self.options.cluster}-{role}")
        self.credentials = EtcdCredentials(ca.path, directory, self.options.cluster)
        return ServerTls(ca.path, member.cert, member.key, root.cert, root.key)

    def _secure_etcd(self) -> None:
        """`asterfleet etcd secure` for the lab's cluster, as root (its certificate)."""
        import asyncio

        from asterfleet.etcdtools import roles
        from asterfleet.secretfile import write_secret

        assert self.credentials is not None
        root = self.etcd_security("root")
        assert root is not None

        async def apply() -> roles.Outcome:
            from asterfleet.etcd_client import Etcd

            async with Etcd(self.etcd_endpoint, timeout=10.0, security=root) as client:
                return await roles.apply(client, roles.plan(self.options.cluster))

        # Idempotent, so a first connection lost to a slow TLS handshake on a
        # busy machine is simply tried again (bounded).
        from asterfleet.errors import EtcdUnavailable

        for attempt in range(3):
            try:
                outcome = asyncio.run(apply())
                break
            except EtcdUnavailable:
                if attempt == 2:
                    raise
        for user, password in outcome.created.items():
            write_secret(self.credentials.directory / f"{user}.password", password + "\n")

    def etcd_args(self, role: str) -> tuple[str, ...]:
        """The options that log a part in to the lab's etcd as ``role``."""
        return self.credentials.args(role) if self.credentials is not None else ()

    def etcd_security(self, role: str) -> EtcdSecurity | None:
        if self.credentials is None:
            return None
        from asterfleet.etcd_client import EtcdSecurity

        cert, key = self.credentials.pair(role)
        return EtcdSecurity(cacert=self.credentials.ca, cert=cert, key=key)

    @property
    def etcd_endpoint(self) -> str:
        """Every member's endpoint, comma-separated, as the agents take them."""
        assert self.etcd is not None, "etcd is not started"
        return ",".join(m.endpoint for m in self.etcd_cluster)

    @property
    def list_file(self) -> Path:
        return self.work_dir / "kamailio" / "dispatcher.list"

    def start_kamailio(self) -> KamailioServer:
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="af-"))
        kdir = self.work_dir / "kamailio"
        kdir.mkdir(parents=True, exist_ok=True)
        self.sip_port = self.sip_port or free_port_both()
        cfg = KamailioConfig(
            list_file=self.list_file,
            rpc_socket=self.run_dir / "kamailio_rpc.sock",
            runtime_dir=self.run_dir,
            listen=(f"udp:127.0.0.1:{self.sip_port}", f"tcp:127.0.0.1:{self.sip_port}"),
            algorithm=self.options.algorithm.value,
            children=self.options.kamailio_children,
            capture=self.options.capture,
            capture_id=self.options.capture_id,
            rpc_http=f"127.0.0.1:{free_port()}" if self.options.rpc_http else None,
            log_level=self.options.kamailio_log_level,
        )
        self.kamailio = KamailioServer(cfg, kdir, shm_mb=self.options.kamailio_shm_mb)
        self.kamailio.start()
        return self.kamailio

    @property
    def rpc_target(self) -> str:
        assert self.kamailio is not None, "Kamailio is not started"
        return self.kamailio.rpc_target

    def start_balancer(
        self, balancer_id: str = "lb1", extra: tuple[str, ...] = ()
    ) -> ManagedProcess:
        self.balancer = ManagedProcess(
            "balancer",
            agent_argv(
                "balancer",
                "run",
                "--etcd",
                self.etcd_endpoint,
                "--cluster",
                self.options.cluster,
                "--id",
                balancer_id,
                *(("--capture-id", str(self.options.capture_id)) if self.options.capture else ()),
                "--list-file",
                str(self.list_file),
                "--rpc",
                self.rpc_target,
                "--algorithm",
                self.options.algorithm.value,
                "--log-level",
                self.options.log_level,
                *self.etcd_args("balancer"),
                *extra,
            ),
            self.work_dir / "balancer.log",
        ).start()
        return self.balancer

    def add_node(
        self,
        node_id: str,
        weight: int = 1,
        scenario: str | Path = "uas.xml",
        drain_timeout: float | None = None,
        extra: tuple[str, ...] = (),
        uas_args: tuple[str, ...] = (),
    ) -> LabNode:
        bdir = self.work_dir / "nodes" / node_id
        uas = SippUas(bdir, name="uas", scenario=scenario, extra_args=uas_args).start()
        agent = ManagedProcess(
            f"node-{node_id}",
            agent_argv(
                "node",
                "run",
                "--etcd",
                self.etcd_endpoint,
                "--cluster",
                self.options.cluster,
                "--id",
                node_id,
                "--sip-uri",
                uas.sip_uri,
                "--weight",
                str(weight),
                "--ttl",
                str(self.options.node_ttl),
                "--calls",
                f"sipp-stat:{uas.stat_path}",
                "--drain-timeout",
                str(drain_timeout or self.options.drain_timeout),
                "--log-level",
                self.options.log_level,
                *self.etcd_args("node"),
                *extra,
            ),
            bdir / "agent.log",
        ).start()
        node = LabNode(node_id, uas, agent, weight)
        self.nodes[node_id] = node
        return node

    @staticmethod
    def retire(node: LabNode, timeout: float = 120) -> int | None:
        """Drain (SIGTERM to the agent, which waits for its calls), then stop the box.

        The agent's exit code, or None when it had to be stopped hard.
        """
        node.agent.signal(signal.SIGTERM)
        code: int | None
        try:
            assert node.agent.proc is not None
            code = node.agent.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            node.agent.stop()
            code = None
        node.uas.stop()
        return code

    def remove_node(self, node_id: str, timeout: float = 120) -> int | None:
        """Take a node out of the lab the way an operator would: drain it."""
        return self.retire(self.nodes.pop(node_id), timeout)

    def kill_node(self, node_id: str) -> None:
        """A crash: SIGKILL the box and its agent at once."""
        node = self.nodes.pop(node_id)
        node.uas.process.kill() if node.uas.process else None
        node.agent.kill()

    def start_calls(
        self, rate: float, hold_ms: int = 1000, max_calls: int | None = None, name: str = "uac"
    ) -> SippUac:
        uac = SippUac(
            self.work_dir / "callers",
            "127.0.0.1",
            self.sip_port,
            rate=rate,
            hold_ms=hold_ms,
            max_calls=max_calls,
            name=name,
        ).start()
        self.callers.append(uac)
        return uac

    # -- what Kamailio has ---------------------------------------------------

    def dispatcher(self) -> list[DispatcherDestination]:
        try:
            result = call_sync(self.rpc_target, "dispatcher.list", timeout=2.0)
        except Exception as exc:
            if "No Destination Sets" in str(exc):
                return []
            raise
        return parse_dispatcher_list(result)

    def dispatcher_by_uri(self) -> dict[str, DispatcherDestination]:
        return {d.uri: d for d in self.dispatcher()}

    def wait_routable(self, node: LabNode, timeout: float = 15) -> None:
        """Until Kamailio lists the node as active (flags A)."""

        def ok() -> bool:
            dest = self.dispatcher_by_uri().get(node.sip_uri)
            return dest is not None and dest.flags.startswith("A")

        wait_for(ok, timeout, what=f"{node.node_id} routable in Kamailio")

    # -- whole ----------------------------------------------------------------

    def start(self, nodes: int = 0) -> Stack:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.start_etcd()
        self.start_kamailio()
        self.start_balancer()
        for i in range(nodes):
            self.add_node(f"ast{i + 1}")
        return self

    def stop(self) -> None:
        """Stop everything, in an order that leaves nothing behind."""
        for uac in self.callers:
            uac.stop()
        for node in list(self.nodes.values()):
            node.agent.stop(grace=2)
            node.uas.stop()
        self.nodes.clear()
        if self.balancer is not None:
            self.balancer.stop(grace=5)
        if self.kamailio is not None:
            self.kamailio.stop()
        for member in self.etcd_cluster:
            member.stop()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
