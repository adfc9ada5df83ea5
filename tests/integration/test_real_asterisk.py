"""Checks against a real Asterisk 22 (issue 13.6), run when ASTERFLEET_ASTERISK
names an installed Asterisk: its prefix (``/opt/ast22``) or its binary
(``/opt/ast22/sbin/asterisk``). Skipped otherwise, with the reason.

The box's configuration is the one `asterfleet asterisk config` renders,
unchanged; Asterisk binds 127.0.0.3, the "balancer" (SIPp here) sends from
127.0.0.1 and the node agent probes from 127.0.0.3.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from asterfleet.asterisk.boxconf import MODULES, BoxConfig, render_box_config
from asterfleet.capture.hepconf import HepConf
from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import start_single
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, parse_node
from asterfleet.lab.stack import Stack, StackOptions, agent_argv
from asterfleet.node.ami import AmiSession
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for
from asterfleet.sip.options import build_options, parse_status, probe
from asterfleet.sipp.runner import SippUac

pytestmark = pytest.mark.integration

BOX = "127.0.0.3"  # where Asterisk listens
AGENT = "127.0.0.1"  # the kernel's source address for anything sent to 127.0.0.x
BALANCER = "127.0.0.1"  # Kamailio in the stack
SECRET = "real-asterisk-test"
DIALPLAN = """[fleet-dialplan]
exten => asterfleet,1,Answer()
 same => n,Wait(60)
 same => n,Hangup()
"""


def asterisk_prefix() -> Path | None:
    value = os.environ.get("ASTERFLEET_ASTERISK")
    if not value:
        return None
    path = Path(value)
    return path.parent.parent if path.is_file() else path


def require_asterisk() -> Path:
    """The Asterisk prefix, or skip the test saying why."""
    prefix = asterisk_prefix()
    if prefix is None:
        pytest.skip("ASTERFLEET_ASTERISK is not set: no real Asterisk 22 to test against")
    if not (prefix / "sbin" / "asterisk").is_file():
        pytest.skip(f"ASTERFLEET_ASTERISK={prefix}: no sbin/asterisk there")
    return prefix


@dataclass
class Box:
    prefix: Path
    etc: Path
    sip_port: int
    ami_port: int
    process: ManagedProcess

    @property
    def binary(self) -> str:
        return str(self.prefix / "sbin" / "asterisk")

    def cli(self, command: str, timeout: float = 20) -> str:
        done = subprocess.run(
            [self.binary, "-C", str(self.etc / "asterisk.conf"), "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done.stdout + done.stderr


@contextlib.contextmanager
def running_box(
    tmp_path: Path,
    balancers: tuple[str, ...],
    capture: str | None = None,
    dialplan: str = DIALPLAN,
) -> Iterator[Box]:
    """A real Asterisk with the configuration `asterfleet asterisk config` renders
    and ``dialplan`` as the operator's dialplan.conf."""
    prefix = require_asterisk()
    state = Path(tempfile.mkdtemp(prefix="af-ast-"))  # short: unix socket paths
    etc = tmp_path / "etc"
    sip_port, ami_port = free_port(), free_port()
    cfg = BoxConfig(
        balancers=balancers,
        ami_secret=SECRET,
        agent_address=AGENT,
        sip_bind=BOX,
        sip_port=sip_port,
        ami_port=ami_port,
        prefix=str(prefix),
        config_dir=str(etc),
        state_dir=str(state),
        container=True,
        capture=HepConf(capture, capture_name="ast-real") if capture else None,
    )
    etc.mkdir()
    for name, text in render_box_config(cfg).items():
        (etc / name).write_text(text)
    (etc / "dialplan.conf").write_text(dialplan)
    for sub in ("run", "log", "spool", "db"):
        (state / sub).mkdir()
    process = ManagedProcess(
        "asterisk",
        [str(prefix / "sbin" / "asterisk"), "-C", str(etc / "asterisk.conf"), "-f", "-vvv"],
        tmp_path / "asterisk.log",
    ).start()
    b = Box(prefix, etc, sip_port, ami_port, process)
    try:
        wait_for(
            lambda: "fully booted" in b.cli("core waitfullybooted", timeout=5).lower(),
            90,
            what="Asterisk fully booted",
        )
        yield b
    except BaseException:
        print(process.log_tail(60))
        raise
    finally:
        process.stop(grace=15)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    # The balancers elsewhere (127.0.0.2): the agent (127.0.0.1) gets its own endpoint.
    with running_box(tmp_path, ("127.0.0.2",)) as b:
        yield b


def test_the_generated_configuration_loads(box: Box) -> None:
    modules = box.cli("module show")
    missing = [m for m in MODULES if m not in modules]
    assert missing == [], f"modules not loaded: {missing}"
    endpoints = box.cli("pjsip show endpoints")
    assert "fleet-balancers" in endpoints and "asterfleet-agent" in endpoints
    assert "asterfleet" in box.cli("manager show users")
    assert "fleet-dialplan" in box.cli("dialplan show from-balancers")
    log = box.process.log_path.read_text(errors="replace")
    assert "Stasis initialization failed" not in log
    # Every file Asterisk's core reads is rendered: no ERROR line at start.
    assert "Unable to load config file" not in log
    assert "ERROR[" not in log, [line for line in log.splitlines() if "ERROR[" in line]


def options_from(source: str, port: int, call_id: str = "cid-x") -> int | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(3)
        local_port = s.getsockname()[1]
        s.sendto(
            build_options(BOX, port, "udp", source, local_port, call_id, 1, "b1", "t1"),
            (BOX, port),
        )
        return parse_status(s.recv(65535))


def test_the_agents_probe_is_identified_and_a_stranger_is_not(box: Box) -> None:
    result = asyncio.run(probe(BOX, box.sip_port, "udp", 3.0))
    assert result.status == 200, result
    assert options_from("127.0.0.5", box.sip_port) == 401


def test_calls_are_counted_over_ami_through_a_graceful_stop(tmp_path: Path) -> None:
    with running_box(tmp_path, (BALANCER,)) as box:
        assert asyncio.run(count_through_graceful_stop(box, tmp_path)) == [3, 503, 0]


async def count_through_graceful_stop(box: Box, tmp_path: Path) -> list[int | None]:
    session = AmiSession("127.0.0.1", box.ami_port, "asterfleet", SECRET, resync_interval=1)
    stopping = asyncio.Event()
    task = asyncio.create_task(session.run(stopping))
    seen: list[int | None] = []
    uac = SippUac(
        tmp_path / "uac", BOX, box.sip_port, rate=5, hold_ms=6000, max_calls=3, host=BALANCER
    ).start()
    try:
        for _ in range(300):
            if session.calls == 3:
                break
            await asyncio.sleep(0.05)
        seen.append(session.calls)
        assert session.version is not None and session.version.startswith("22.")
        stopper = subprocess.Popen(  # returns only when Asterisk has gone
            [box.binary, "-C", str(box.etc / "asterisk.conf"), "-rx", "core stop gracefully"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):  # until Asterisk refuses new work
            if (await probe(BOX, box.sip_port, "udp", 1.0)).status == 503:
                break
            await asyncio.sleep(0.05)
        # New calls are refused, the open session keeps counting down.
        refused = await probe(BOX, box.sip_port, "udp", 3.0)
        seen.append(refused.status)
        for _ in range(400):
            if session.calls == 0:
                break
            await asyncio.sleep(0.05)
        seen.append(session.calls)
        await asyncio.to_thread(uac.wait, 30)
        await asyncio.to_thread(stopper.wait, 30)
    finally:
        uac.stop()
        stopping.set()
        await asyncio.wait_for(task, 10)
    return seen


def test_a_drain_of_a_real_box_fails_no_call_setup(tmp_path: Path) -> None:
    require_asterisk()  # before the stack starts
    stack = Stack(tmp_path / "stack", StackOptions(cluster="real"))
    try:
        stack.start()
        drain_real_box(stack, tmp_path)
    finally:
        stack.stop()


def drain_real_box(stack: Stack, tmp_path: Path) -> None:
    with running_box(tmp_path, (BALANCER,)) as box:
        other = stack.add_node("sipp1")  # takes the new calls meanwhile
        uri = f"sip:{BOX}:{box.sip_port};transport=udp"
        agent = ManagedProcess(
            "node-ast-real",
            agent_argv(
                "node", "run", "--etcd", stack.etcd_endpoint, "--cluster",
                stack.options.cluster, "--id", "ast-real", "--sip-uri", uri,
                "--calls", f"ami://asterfleet@{AGENT}:{box.ami_port}",
                "--drain-timeout", "60", "--drain-settle", "1",
            ),
            tmp_path / "agent.log",
            env={"ASTERFLEET_AMI_SECRET": SECRET},
        ).start()  # fmt: skip
        try:
            stack.wait_routable(other, timeout=60)
            wait_for(
                lambda: (
                    stack.dispatcher_by_uri().get(uri, None) is not None
                    and stack.dispatcher_by_uri()[uri].flags.startswith("A")
                ),
                60,
                what="the real box routable",
            )
            # The agent's AMI session is up: count and version in the record.
            got = wait_for(
                lambda: (
                    (r := node_record(stack, "ast-real")) is not None
                    and r.asterisk_version is not None
                    and r
                ),
                30,
                what="the Asterisk version and a call count in the record",
            )
            assert isinstance(got, NodeRecord)
            record = got
            assert record.state.value == "active"
            assert record.asterisk_version is not None
            assert record.asterisk_version.startswith("22.")
            assert record.active_calls == 0 and record.calls_error is None
            uac = stack.start_calls(rate=5, hold_ms=2000, max_calls=40)
            wait_for(
                lambda: (node_record(stack, "ast-real") or record).active_calls,
                30,
                what="calls on the real box",
            )
            agent.signal(signal.SIGTERM)
            assert agent.proc is not None
            assert agent.proc.wait(timeout=90) == 0
            assert "drained" in agent.log_path.read_text()
            assert uac.wait(120) == 0
            stats = uac.stats()
            assert (stats.successful_calls, stats.failed_calls) == (40, 0)
        finally:
            agent.stop()


def test_hep_from_res_hep_pjsip_is_found_by_call_id(tmp_path: Path) -> None:
    from tests.integration.test_capture_collector import CaptureServer

    require_asterisk()
    capture = CaptureServer(tmp_path / "capture").start()
    try:
        with running_box(tmp_path, (BALANCER,), capture=f"127.0.0.1:{capture.port}") as box:
            assert "res_hep_pjsip.so" in box.cli("module show like hep")
            call_id = f"af-hep-{os.getpid()}"
            assert options_from(AGENT, box.sip_port, call_id) == 200

            def found() -> str | None:
                done = capture.cli("search", "--call-id", call_id, "--messages", "--json")
                return done.stdout if done.stdout.count("OPTIONS") >= 2 else None

            out = wait_for(found, 20, what="the OPTIONS and its 200 stored")
            assert isinstance(out, str) and call_id in out
    finally:
        capture.stop()


def node_record(stack: Stack, node_id: str) -> NodeRecord | None:
    async def go() -> NodeRecord | None:
        async with Etcd(stack.etcd_endpoint) as etcd:
            kv = await etcd.get(Keyspace(stack.options.cluster).node(node_id))
        return (
            None
            if kv is None
            else parse_node(Keyspace(stack.options.cluster).node(node_id), kv.value)
        )

    return asyncio.run(go())


def options_status(source: str, port: int) -> int | None:
    """One OPTIONS from ``source`` (a fresh transaction each time), its answer."""
    unique = f"{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(3)
        local_port = s.getsockname()[1]
        s.sendto(
            build_options(BOX, port, "udp", source, local_port, f"cid-{unique}", 1,
                          f"z9hG4bK-{unique}", f"t-{unique}"),
            (BOX, port),
        )  # fmt: skip
        return parse_status(s.recv(65535))


def test_a_running_box_follows_the_balancers_in_etcd(tmp_path: Path) -> None:
    """asterisk config --follow beside a running Asterisk: a balancer that
    appears in etcd is identified without a restart, one that leaves is not."""
    prefix = require_asterisk()
    server = start_single(tmp_path / "etcd")
    state = Path(tempfile.mkdtemp(prefix="af-ast-"))
    etc = tmp_path / "etc"
    procs: dict[str, ManagedProcess] = {}
    sip_port, ami_port = free_port(), free_port()

    def balancer(lb_id: str, address: str) -> None:
        argv = agent_argv(
            "balancer", "run", "--etcd", server.endpoint, "--cluster", "c1", "--id", lb_id,
            "--list-file", str(tmp_path / f"{lb_id}.list"),
            "--rpc", str(tmp_path / f"{lb_id}.sock"), "--sip-address", address,
        )  # fmt: skip
        procs[lb_id] = ManagedProcess(lb_id, argv, tmp_path / f"{lb_id}.log").start()

    mounted = tmp_path / "dialplan.conf"  # the operator's, a ConfigMap in Kubernetes
    mounted.write_text(DIALPLAN)
    try:
        for sub in ("run", "log", "spool", "db"):
            (state / sub).mkdir()
        balancer("lb1", "127.0.0.2")
        wait_for(lambda: balancer_records(server.endpoint), 30, what="lb1's record")
        procs["follow"] = ManagedProcess(
            "follow",
            agent_argv(
                "asterisk", "config", "--out", str(etc), "--etcd", server.endpoint,
                "--cluster", "c1", "--follow", "--prefix", str(prefix), "--container",
                "--state-dir", str(state), "--sip-bind", BOX, "--sip-port", str(sip_port),
                "--ami-port", str(ami_port), "--agent-address", AGENT,
                "--dialplan-from", str(mounted),
            ),
            tmp_path / "follow.log",
            env={"ASTERFLEET_AMI_SECRET": SECRET, "ASTERFLEET_BALANCERS": ""},
        ).start()  # fmt: skip
        wait_for(lambda: (etc / "hep.conf").is_file(), 60, what="the first render")
        procs["asterisk"] = ManagedProcess(
            "asterisk",
            [str(prefix / "sbin" / "asterisk"), "-C", str(etc / "asterisk.conf"), "-f"],
            tmp_path / "asterisk.log",
        ).start()
        wait_for(lambda: options_status("127.0.0.2", sip_port) == 200, 90, what="lb1 identified")
        assert options_status("127.0.0.5", sip_port) == 401

        balancer("lb2", "127.0.0.5")  # a balancer joins
        started = time.monotonic()
        wait_for(lambda: options_status("127.0.0.5", sip_port) == 200, 30, what="lb2 identified")
        print(f"real asterisk: a new balancer identified after {time.monotonic() - started:.1f} s")
        procs.pop("lb1").stop()  # a balancer leaves
        wait_for(lambda: options_status("127.0.0.2", sip_port) == 401, 30, what="lb1 dropped")
        assert options_status("127.0.0.5", sip_port) == 200
        log = procs["follow"].log_path
        wait_for(lambda: "module_reloaded" in log.read_text(), 10, what="the reload logged")

        # The operator changes the dialplan: the running box takes it.
        def dialplan_has(exten: str) -> bool:
            done = subprocess.run(
                [str(prefix / "sbin" / "asterisk"), "-C", str(etc / "asterisk.conf"), "-rx",
                 f"dialplan show {exten}@fleet-dialplan"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            return f"'{exten}' =>" in done.stdout

        assert dialplan_has("asterfleet") and not dialplan_has("4711")
        mounted.write_text(DIALPLAN + "exten => 4711,1,Answer()\n same => n,Hangup()\n")
        wait_for(lambda: dialplan_has("4711"), 30, what="the new dialplan loaded")
        assert dialplan_has("asterfleet")
    finally:
        for proc in procs.values():
            proc.stop(grace=15)
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


def balancer_records(endpoint: str) -> int:
    async def go() -> int:
        async with Etcd(endpoint) as etcd:
            return len((await etcd.get_prefix(Keyspace("c1").balancers)).items)

    return asyncio.run(go())
