"""Checks against a real Asterisk 22 (issue 13.6), run when ASTERFLEET_ASTERISK
names an installed Asterisk: its prefix (``/opt/ast22``) or its binary
(``/opt/ast22/sbin/asterisk``). Skipped otherwise, with the reason.

The box's configuration is the one `asterfleet asterisk config` renders,
unchanged; Asterisk binds 127.0.0.3, the "balancer" (SIPp here) sends from
127.0.0.1 and the node agent probes from 127.0.0.3.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from asterfleet.asterisk.boxconf import MODULES, BoxConfig, render_box_config
from asterfleet.node.ami import AmiSession
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for
from asterfleet.sip.options import build_options, parse_status, probe
from asterfleet.sipp.runner import SippUac

pytestmark = pytest.mark.integration

BOX = "127.0.0.3"
BALANCER = "127.0.0.1"
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


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    prefix = asterisk_prefix()
    if prefix is None:
        pytest.skip("ASTERFLEET_ASTERISK is not set: no real Asterisk 22 to test against")
    if not (prefix / "sbin" / "asterisk").is_file():
        pytest.skip(f"ASTERFLEET_ASTERISK={prefix}: no sbin/asterisk there")
    state = Path(tempfile.mkdtemp(prefix="af-ast-"))  # short: unix socket paths
    etc = tmp_path / "etc"
    sip_port, ami_port = free_port(), free_port()
    cfg = BoxConfig(
        balancers=(BALANCER,),
        ami_secret=SECRET,
        agent_address=BOX,
        sip_bind=BOX,
        sip_port=sip_port,
        ami_port=ami_port,
        prefix=str(prefix),
        config_dir=str(etc),
        state_dir=str(state),
        container=True,
    )
    etc.mkdir()
    for name, text in render_box_config(cfg).items():
        (etc / name).write_text(text)
    (etc / "dialplan.conf").write_text(DIALPLAN)
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
            lambda: (
                "fully booted" in b.cli("core waitfullybooted", timeout=5).lower()
                or "Asterisk has fully booted" in b.cli("core show uptime", timeout=5)
            ),
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


def test_the_generated_configuration_loads(box: Box) -> None:
    modules = box.cli("module show")
    missing = [m for m in MODULES if m not in modules]
    assert missing == [], f"modules not loaded: {missing}"
    endpoints = box.cli("pjsip show endpoints")
    assert "fleet-balancers" in endpoints and "asterfleet-agent" in endpoints
    assert "fleet-dialplan" in box.cli("dialplan show from-balancers")
    log = box.process.log_path.read_text(errors="replace")
    assert "Stasis initialization failed" not in log


def options_from(source: str, port: int) -> int | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(3)
        local_port = s.getsockname()[1]
        s.sendto(
            build_options(BOX, port, "udp", source, local_port, "cid-x", 1, "b1", "t1"),
            (BOX, port),
        )
        return parse_status(s.recv(65535))


def test_the_agents_probe_is_identified_and_a_stranger_is_not(box: Box) -> None:
    result = asyncio.run(probe(BOX, box.sip_port, "udp", 3.0))
    assert result.status == 200, result
    assert options_from("127.0.0.5", box.sip_port) == 401


def test_calls_are_counted_over_ami_through_a_graceful_stop(box: Box, tmp_path: Path) -> None:
    async def go() -> list[int | None]:
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
            await asyncio.to_thread(box.cli, "core stop gracefully")
            # New calls are refused, the open session keeps counting down.
            refused = await probe(BOX, box.sip_port, "udp", 3.0)
            seen.append(refused.status)
            for _ in range(400):
                if session.calls == 0:
                    break
                await asyncio.sleep(0.05)
            seen.append(session.calls)
            await asyncio.to_thread(uac.wait, 30)
        finally:
            uac.stop()
            stopping.set()
            await asyncio.wait_for(task, 10)
        return seen

    assert asyncio.run(go()) == [3, 503, 0]
