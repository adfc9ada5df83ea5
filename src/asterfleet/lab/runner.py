"""The lab: a whole cluster with traffic on one machine, for people.

Built on :class:`~asterfleet.lab.stack.Stack` (the same harness the
integration tests use), plus the web console and a steady call load. The
node count is reconciled to ``desired.json``, so ``lab scale N`` from
another terminal is just a write of the wish.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shlex
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asterfleet import logs
from asterfleet.balancer.listfile import write_atomic
from asterfleet.console.process import start_console
from asterfleet.errors import AsterfleetError
from asterfleet.etcd_client import NO_SECURITY, Etcd, EtcdSecurity
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.keys import Keyspace
from asterfleet.lab.factory import LabFactory, missing_binaries
from asterfleet.lab.stack import Stack, StackOptions, agent_argv
from asterfleet.lab.state import LabInfo, read_desired, write_desired, write_info
from asterfleet.lab.swap import BoxSwapper, start_controller
from asterfleet.runtime.ports import free_port, free_port_both
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for
from asterfleet.secretfile import write_secret
from asterfleet.sipp.runner import SippUac
from asterfleet.sipp.stats import SippError

REQUIRED = ("etcd", "kamailio", "sipp")


@dataclass
class LabOptions:
    lab_dir: Path
    nodes: int = 3
    calls_per_second: float = 5.0
    hold_ms: int = 2000
    console: bool = True
    console_port: int | None = None
    cluster: str = "lab"
    drain_timeout: float = 30.0
    capture: bool = True
    # The registry (token server: the console) and a factory worker with a
    # sample knot, so the Images and Builds areas work in the lab too.
    factory: bool = True


@dataclass
class Lab:
    options: LabOptions
    stack: Stack = field(init=False)
    console: ManagedProcess | None = None
    capture: ManagedProcess | None = None
    capture_port: int = 0
    factory: LabFactory | None = None
    caller: SippUac | None = None
    info: LabInfo | None = None
    removing: dict[str, Future[int | None]] = field(default_factory=dict)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    swapper: BoxSwapper | None = None  # the boxes' replace action, for rollouts
    rollout: ManagedProcess | None = None  # the rollout controller

    def __post_init__(self) -> None:
        if self.options.capture:
            self.capture_port = free_port_both()
        self.stack = Stack(
            self.options.lab_dir / "run",
            StackOptions(
                cluster=self.options.cluster,
                drain_timeout=self.options.drain_timeout,
                log_level="info",
                # Kamailio sends every SIP message it handles to the capture.
                capture=f"127.0.0.1:{self.capture_port}" if self.capture_port else None,
                secure_etcd=True,
            ),
        )
        self.log = logs.get("lab")

    # -- start ----------------------------------------------------------------

    @staticmethod
    def check_binaries() -> None:
        """MissingBinary (naming the Debian package) before anything starts."""
        for program in REQUIRED:
            require_binary(program)

    def start(self) -> LabInfo:
        self.check_binaries()
        lab_dir = self.options.lab_dir
        lab_dir.mkdir(parents=True, exist_ok=True)
        if self.capture_port:
            self._start_capture()
        self.stack.start()
        self.swapper = BoxSwapper(self.stack, uas_args=()).start()
        self.rollout = start_controller(self.stack, self.swapper.replace_action)
        write_desired(lab_dir, self.options.nodes)
        self.reconcile_scale()
        console_url = password_file = None
        if self.options.console:
            console_url, password_file = self._start_console()
            if self.factory is not None:
                self.factory.start_worker()
        if self.options.calls_per_second > 0:
            for node in list(self.stack.nodes.values()):
                self.stack.wait_routable(node, timeout=20)
            self.caller = self.stack.start_calls(
                self.options.calls_per_second, hold_ms=self.options.hold_ms, name="calls"
            )
        assert self.stack.etcd is not None
        etcd_env = self._write_etcd_env()
        self.info = LabInfo(
            pid=_own_pid(),
            started_at=time.time(),
            cluster=self.options.cluster,
            etcd=self.stack.etcd_endpoint,
            sip=f"sip:127.0.0.1:{self.stack.sip_port}",
            rpc=self.stack.rpc_target,
            console_url=console_url,
            console_user="admin" if console_url else None,
            console_password_file=str(password_file) if password_file else None,
            capture=f"127.0.0.1:{self.capture_port}" if self.capture else None,
            capture_db=self.capture_db if self.capture else None,
            registry=self.factory.registry_host if self.factory else None,
            factory_db=self.factory.factory_db if self.factory else None,
            calls_per_second=self.options.calls_per_second,
            etcd_env=str(etcd_env) if etcd_env else None,
        )
        self._record_processes()
        return self.info

    def _write_etcd_env(self) -> Path | None:
        """``etcd.env``: what a shell sources to reach the lab's etcd as its
        operator (`. etcd.env; asterfleet fleet ls`)."""
        credentials = self.stack.credentials
        if credentials is None:
            return None
        values = {
            "ASTERFLEET_ETCD": self.stack.etcd_endpoint,
            "ASTERFLEET_CLUSTER": self.options.cluster,
            **credentials.env("operator"),
        }
        path = self.options.lab_dir / "etcd.env"
        path.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))
        return path

    @property
    def capture_db(self) -> str:
        return f"sqlite:///{self.options.lab_dir / 'capture.db'}"

    def _start_capture(self) -> None:
        port = self.capture_port
        self.capture = ManagedProcess(
            "capture",
            agent_argv(
                "capture", "run",
                "--listen", f"udp:127.0.0.1:{port},tcp:127.0.0.1:{port}",
                "--db", self.capture_db,
                "--retention", "1d",
            ),
            self.options.lab_dir / "run" / "capture.log",
        ).start()  # fmt: skip

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True

        wait_for(listening, 20, what=f"the HEP capture on port {port}")

    def _start_console(self) -> tuple[str, Path]:
        lab_dir = self.options.lab_dir
        password_file = lab_dir / "admin-password"
        if not password_file.exists():
            write_secret(password_file, secrets.token_urlsafe(12) + "\n")
        port = self.options.console_port or free_port()
        console_db = f"sqlite:///{lab_dir / 'console.db'}"
        factory_args: list[str] = []
        if self.options.factory:
            missing = missing_binaries()
            if missing:
                self.log.warning("factory_skipped", missing=",".join(missing))
            else:
                self.factory = LabFactory(lab_dir, port, console_db)
                self.factory.prepare()
                self.factory.start_registry()
                factory_args = self.factory.console_args()
        running = start_console(
            lab_dir / "run" / "console.log",
            etcd=self.stack.etcd_endpoint,
            db=console_db,
            cluster=self.options.cluster,
            extra_args=[
                "--admin-password-file",
                str(password_file),
                *(["--capture-db", self.capture_db] if self.capture else []),
                *factory_args,
                *self.stack.etcd_args("operator"),
            ],
            port=port,
            timeout=120,  # a loaded machine: imports alone can take half a minute
        )
        self.console = running.process
        url = running.url
        return url, password_file

    def _record_processes(self) -> None:
        assert self.info is not None
        pids: dict[str, int] = {}
        st = self.stack
        if st.etcd is not None and st.etcd.process is not None and st.etcd.process.proc:
            pids["etcd"] = st.etcd.process.pid
        if st.kamailio is not None and st.kamailio.process is not None:
            pids["kamailio"] = st.kamailio.process.pid
        if st.balancer is not None:
            pids["balancer"] = st.balancer.pid
        if self.console is not None:
            pids["console"] = self.console.pid
        if self.capture is not None:
            pids["capture"] = self.capture.pid
        if self.factory is not None:
            for part in (self.factory.registry, self.factory.worker):
                if part is not None:
                    pids[part.name] = part.pid
        if self.caller is not None and self.caller.process is not None:
            pids["calls"] = self.caller.process.pid
        for b in st.nodes.values():
            pids[f"{b.node_id}-agent"] = b.agent.pid
            if b.uas.process is not None:
                pids[f"{b.node_id}-uas"] = b.uas.process.pid
        self.info.pids = pids
        self.info.ports = sorted({st.sip_port, *(b.uas.port for b in st.nodes.values())})
        write_info(self.options.lab_dir, self.info)

    # -- scale ------------------------------------------------------------------

    def reconcile_scale(self) -> None:
        """Add or drain nodes until their number is what desired.json says."""
        desired = read_desired(self.options.lab_dir)
        if desired is None:
            return
        for node_id, fut in list(self.removing.items()):
            if fut.done():
                del self.removing[node_id]
        current = sorted(self.stack.nodes, key=_node_order)
        if len(current) < desired:
            for i in range(1, 100):
                if len(self.stack.nodes) >= desired:
                    break
                name = f"ast{i}"
                if name in self.stack.nodes or name in self.removing:
                    continue
                self.log.info("node_add", node=name)
                self.stack.add_node(name)
        elif len(current) > desired:
            for name in current[desired:][::-1]:
                self.log.info("node_drain", node=name)
                node = self.stack.nodes.pop(name)
                self.removing[name] = self._pool.submit(
                    self.stack.retire, node, self.options.drain_timeout + 15
                )
        if self.info is not None:
            self._record_processes()

    # -- status -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the live view and `lab status` show."""
        view: dict[str, Any] = {"nodes": [], "balancers": [], "problems": [], "etcd": "ok"}
        try:
            fleet = asyncio.run(
                _read(
                    self.stack.etcd_endpoint,
                    self.options.cluster,
                    self.stack.etcd_security("operator"),
                )
            )
            view["nodes"] = [n.as_dict() for n in fleet.nodes]
            view["balancers"] = [b.model_dump() for b in fleet.balancers]
            view["problems"] = fleet.problems
            view["balancers_agree"] = fleet.balancers_agree()
        except AsterfleetError as exc:
            view["etcd"] = str(exc)
        routed = {}
        for name, b in list(self.stack.nodes.items()):
            routed[name] = b.uas.invites_received()
        for node in view["nodes"]:
            node["calls_routed"] = routed.get(node["id"])
        calls: dict[str, Any] = {}
        if self.caller is not None:
            try:
                s = self.caller.stats()
                calls = {
                    "rate": self.options.calls_per_second,
                    "current": s.current_calls,
                    "successful": s.successful_calls,
                    "failed": s.failed_calls,
                    "created": s.total_calls_created,
                }
            except SippError as exc:
                calls = {"error": str(exc)}
        return {
            "at": time.time(),
            "info": json.loads(self.info.to_json()) if self.info else None,
            "desired_nodes": read_desired(self.options.lab_dir),
            "draining": sorted(self.removing),
            "calls": calls,
            **view,
        }

    def write_status(self, snap: dict[str, Any]) -> None:
        write_atomic(self.options.lab_dir / "status.json", json.dumps(snap, default=str) + "\n")

    # -- stop -----------------------------------------------------------------------

    def stop(self) -> dict[str, Any]:
        """Stop the calls (letting them finish), then everything else."""
        final: dict[str, Any] = {}
        if self.caller is not None:
            try:
                s = self.caller.stop_gracefully(self.options.hold_ms / 1000 + 15)
                final = {
                    "successful": s.successful_calls,
                    "failed": s.failed_calls,
                    "created": s.total_calls_created,
                }
            except SippError as exc:
                final = {"error": str(exc)}
        for fut in self.removing.values():
            try:
                fut.result(timeout=self.options.drain_timeout + 20)
            except Exception as exc:
                self.log.warning("drain_wait_failed", error=str(exc))
        self._pool.shutdown(wait=True)
        if self.rollout is not None:
            self.rollout.stop(grace=5)
        if self.swapper is not None:
            self.swapper.stop()
        if self.factory is not None:
            self.factory.stop()
        if self.console is not None:
            self.console.stop(grace=5)
        self.stack.stop()
        if self.capture is not None:
            self.capture.stop(grace=10)
        write_atomic(
            self.options.lab_dir / "last-run.json",
            json.dumps({"stopped_at": time.time(), "calls": final}) + "\n",
        )
        (self.options.lab_dir / "lab.json").unlink(missing_ok=True)
        return final


async def _read(endpoint: str, cluster: str, security: EtcdSecurity | None) -> Any:
    async with Etcd(endpoint, timeout=1.0, security=security or NO_SECURITY) as etcd:
        return await read_fleet(etcd, Keyspace(cluster))


def _node_order(name: str) -> tuple[int, str]:
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else 0, name)


def _own_pid() -> int:
    import os

    return os.getpid()
