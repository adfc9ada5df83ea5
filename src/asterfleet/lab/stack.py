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

from asterfleet.etcdtools.server import EtcdServer, start_cluster, start_single
from asterfleet.fleet.dispatcher_list import Algorithm
from asterfleet.kamailio.config import KamailioConfig
from asterfleet.kamailio.rpc import DispatcherDestination, call_sync, parse_dispatcher_list
from asterfleet.kamailio.server import KamailioServer
from asterfleet.runtime.ports import free_port, free_port_both
from asterfleet.runtime.process import ManagedProcess, wait_for
from asterfleet.sipp.runner import SippUac, SippUas


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

    # -- parts -------------------------------------------------------------

    def start_etcd(self) -> EtcdServer:
        if self.options.etcd_members > 1:
            self.etcd_cluster = start_cluster(self.work_dir / "etcd", self.options.etcd_members)
            self.etcd = self.etcd_cluster[0]
        else:
            self.etcd = start_single(self.work_dir / "etcd")
            self.etcd_cluster = [self.etcd]
        return self.etcd

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
