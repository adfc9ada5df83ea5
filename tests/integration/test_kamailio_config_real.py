"""The generated kamailio.cfg against the real Kamailio 5.6: check, start, RPC, reload."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.kamailio.config import KamailioConfig, render_config
from asterfleet.kamailio.rpc import DispatcherDestination, KamailioRpc, call_sync
from asterfleet.kamailio.server import KamailioServer, KamailioStartError
from asterfleet.runtime.ports import free_port, free_port_both
from asterfleet.runtime.process import require_binary

pytestmark = pytest.mark.integration


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short run directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="afk-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def make_config(tmp_path: Path, run_dir: Path, **changes: object) -> KamailioConfig:
    port = free_port_both()
    fields: dict[str, object] = {
        "list_file": tmp_path / "dispatcher.list",
        "rpc_socket": run_dir / "rpc.sock",
        "runtime_dir": run_dir,
        "listen": [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"],
    }
    fields.update(changes)
    return KamailioConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["weight", "least-calls", "round-robin"])
@pytest.mark.parametrize("extras", [{}, {"capture": "127.0.0.1:9060", "rpc_http": "http"}])
def test_kamailio_accepts_config(
    tmp_path: Path, short_dir: Path, algorithm: str, extras: dict[str, str]
) -> None:
    kamailio = require_binary("kamailio")
    changes: dict[str, object] = {"algorithm": algorithm, **extras}
    if "rpc_http" in changes:
        changes["rpc_http"] = f"127.0.0.1:{free_port()}"
    cfg = make_config(tmp_path, short_dir, **changes)
    path = tmp_path / "kamailio.cfg"
    path.write_text(render_config(cfg))
    check = subprocess.run(
        [kamailio, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "config file ok" in check.stdout + check.stderr


@pytest.fixture
def server(tmp_path: Path, short_dir: Path) -> Iterator[KamailioServer]:
    cfg = make_config(tmp_path, short_dir, rpc_http=f"127.0.0.1:{free_port()}")
    srv = KamailioServer(cfg, tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def sip_udp(
    port: int, method: str = "INVITE", timeout: float = 5.0, host: str = "127.0.0.1"
) -> str:
    """Send one request to the balancer; the status line of its final answer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    hostport = f"[{host}]" if family == socket.AF_INET6 else host
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        s.settimeout(timeout)
        mine = s.getsockname()[1]
        ruri = f"sip:100@{hostport}:{port}" if method == "INVITE" else f"sip:{hostport}:{port}"
        msg = (
            f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {hostport}:{mine};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:test@{hostport}>;tag=t1\r\n"
            f"To: <{ruri}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:test@{hostport}:{mine}>\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (host, port))
        while True:
            status = s.recv(65535).decode(errors="replace").split("\r\n", 1)[0]
            if int(status.split()[1]) >= 200:
                return status


def lb_port(srv: KamailioServer) -> int:
    return int(srv.cfg.listen[0].rsplit(":", 1)[1])


def listed(srv: KamailioServer) -> list[DispatcherDestination]:
    async def go() -> list[DispatcherDestination]:
        async with KamailioRpc(srv.rpc_target) as rpc:
            return await rpc.dispatcher_list()

    return asyncio.run(go())


def test_real_kamailio_lists_and_reloads(server: KamailioServer) -> None:
    a, b, c = free_port_both(), free_port_both(), free_port_both()
    server.cfg.list_file.write_text(
        f"1 sip:127.0.0.1:{a} 8 0 duid=a;weight=60;maxload=10\n"
        f"1 sip:127.0.0.1:{b} 4 0 duid=b;maxload=10\n"
    )
    server.start()
    by_uri = {d.uri: d for d in listed(server)}
    assert set(by_uri) == {f"sip:127.0.0.1:{a}", f"sip:127.0.0.1:{b}"}
    probed = by_uri[f"sip:127.0.0.1:{a}"]
    # Nothing answers on port a: the probe may already have made it inactive.
    assert probed.flags in ("AP", "TP", "IP"), probed
    assert probed.attrs == {"duid": "a", "weight": "60", "maxload": "10"}
    assert by_uri[f"sip:127.0.0.1:{b}"].flags == "DX"

    # Change the file, reload over RPC (twice in a row: reload_delta is 0).
    server.cfg.list_file.write_text(f"1 sip:127.0.0.1:{c} 4 0 duid=c\n")

    async def reload_twice() -> tuple[int, int]:
        async with KamailioRpc(server.rpc_target) as rpc:
            before = await rpc.main_pid()
            await rpc.dispatcher_reload()  # RpcCallError if Kamailio refused it
            await rpc.dispatcher_reload()
            return before, await rpc.main_pid()

    # Both reloads accepted back to back, and Kamailio kept running: the same
    # main process before and after (a crash would be a restart or no answer).
    before, after = asyncio.run(reload_twice())
    assert server.process is not None and before == after == server.process.pid
    assert server.alive()
    assert [(d.uri, d.flags) for d in listed(server)] == [(f"sip:127.0.0.1:{c}", "DX")]

    # Same answers over HTTP.
    url = server.http_rpc_url
    assert url is not None
    result = call_sync(url, "dispatcher.list")
    assert result["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"]["URI"] == f"sip:127.0.0.1:{c}"


def test_a_balancer_on_ipv6_answers_over_ipv6(tmp_path: Path, short_dir: Path) -> None:
    port = free_port_both()
    cfg = make_config(tmp_path, short_dir, listen=[f"udp:[::1]:{port}"])
    cfg.list_file.write_text("")
    srv = KamailioServer(cfg, tmp_path)
    try:
        srv.start()
        # OPTIONS to the balancer itself is answered locally; a call finds no node.
        assert sip_udp(port, method="OPTIONS", host="::1") == "SIP/2.0 200 OK"
        assert sip_udp(port, host="::1") == "SIP/2.0 503 Service Unavailable"
    finally:
        srv.stop()


def test_empty_fleet_answers_503(server: KamailioServer) -> None:
    server.cfg.list_file.write_text("")
    server.start()
    assert listed(server) == []
    assert sip_udp(lb_port(server)) == "SIP/2.0 503 Service Unavailable"
    # OPTIONS to the balancer itself is answered locally.
    assert sip_udp(lb_port(server), method="OPTIONS") == "SIP/2.0 200 OK"
    # Only disabled boxes: still 503, never 404.
    server.cfg.list_file.write_text(f"1 sip:127.0.0.1:{free_port_both()} 4 0\n")
    call_sync(server.rpc_target, "dispatcher.reload")
    assert sip_udp(lb_port(server)) == "SIP/2.0 503 Service Unavailable"
    # Back to empty: reload accepted, list empty again.
    server.cfg.list_file.write_text("# empty fleet\n")
    call_sync(server.rpc_target, "dispatcher.reload")
    assert listed(server) == []


def test_dead_box_fails_over_to_503_within_fr_timer(server: KamailioServer) -> None:
    dead = free_port_both()
    server.cfg.list_file.write_text(f"1 sip:127.0.0.1:{dead} 0 0 weight=100\n")
    server.start()
    started = time.monotonic()
    assert sip_udp(lb_port(server), timeout=10) == "SIP/2.0 503 Service Unavailable"
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 5, elapsed
    assert [d.state for d in listed(server)] == ["I"]


def test_restart_gives_a_fresh_uptime(server: KamailioServer) -> None:
    server.start()
    pid = server.process.pid if server.process else None
    server.restart()
    assert server.alive() and server.process is not None and server.process.pid != pid
    assert call_sync(server.rpc_target, "core.uptime")["uptime"] <= 2
    assert server.stop() is not None
    assert not server.alive()


def test_the_vip_health_check_passes_under_keepalived_umask(server: KamailioServer) -> None:
    """keepalived runs its check scripts with umask 0177: the RPC client's
    private directory must still be usable (it came out 0600 once, and no
    balancer in the podman cluster ever took the VIP)."""
    server.start()
    argv = [sys.executable, "-m", "asterfleet.vip.health", "--rpc", str(server.cfg.rpc_socket)]
    if os.geteuid() == 0:
        # Like keepalived's script_user: without root's permission override.
        argv = [require_binary("setpriv"), "--bounding-set=-dac_override,-dac_read_search",
                *argv]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, umask=0o177)
    assert done.returncode == 0, done.stderr
    assert "up for" in done.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a socket to another user needs root")
def test_a_backup_balancer_listens_on_an_address_it_does_not_hold(
    tmp_path: Path, short_dir: Path
) -> None:
    """--free-bind and --rpc-socket-owner, as the kamailio-lb image uses them:
    Kamailio binds the VIP before keepalived brings it here, and hands its
    JSON-RPC socket to the user the balancer agent runs as."""
    port = free_port_both()
    not_here = "192.0.2.77"  # TEST-NET-1: on no interface of this host; nothing is sent to it
    listen = [f"udp:127.0.0.1:{port}", f"udp:{not_here}:{port}"]
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
    cfg = make_config(
        tmp_path, short_dir, listen=listen, free_bind=True, rpc_socket_user="nobody",
        rpc_socket_group=group,
    )  # fmt: skip
    with KamailioServer(cfg, tmp_path) as srv:
        owner = cfg.rpc_socket.stat()
        assert (owner.st_uid, owner.st_gid) == (nobody.pw_uid, nobody.pw_gid)
        assert sip_udp(port, "OPTIONS").startswith("SIP/2.0 ")
        sockets = call_sync(srv.rpc_target, "corex.list_sockets")
        assert not_here in json.dumps(sockets)
    refused = make_config(tmp_path, short_dir, listen=listen)
    with pytest.raises(KamailioStartError, match=not_here):
        KamailioServer(refused, tmp_path / "refused").start()


def test_capture_sends_hep3(tmp_path: Path, short_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5)
        port = collector.getsockname()[1]
        cfg = make_config(tmp_path, short_dir, capture=f"127.0.0.1:{port}", capture_id=77)
        srv = KamailioServer(cfg, tmp_path)
        try:
            srv.start()
            assert sip_udp(lb_port(srv), method="OPTIONS") == "SIP/2.0 200 OK"
            packet = collector.recv(65535)
        finally:
            srv.stop()
    assert packet.startswith(b"HEP3")
    assert b"OPTIONS sip:127.0.0.1:" in packet
