"""The release watcher in a real IRC server (Debian's ngircd on loopback):
it reports new releases in its channel and answers !status, !check,
!build (a real knot store) and !rollout (a real etcd), the last three only
for nicks on its allow list."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import EtcdServer, start_single
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NodeRecord, NodeState
from asterfleet.rollout.model import Rollout
from asterfleet.rollout.operations import get_rollout
from tests.integration.test_releases_watcher import (
    ImageRepo,
    Upstream,
    free_port,
    image_repo,
    upstream,
    write_config,
)

__all__ = ["image_repo", "upstream"]  # fixtures used here
CHANNEL = "#releases-test"
ASTERFLEET = [sys.executable, "-m", "asterfleet"]


@pytest.fixture
def ircd(tmp_path: Path) -> Iterator[int]:
    """ngircd on a free loopback port; stopped after the test."""
    if shutil.which("ngircd") is None:
        pytest.fail("ngircd is not installed (apt-get install ngircd)")
    port = free_port()
    conf = tmp_path / "ngircd.conf"
    (tmp_path / "motd").write_text("releases test\n")
    conf.write_text(
        f"""[Global]
Name = irc.releases.test
Info = asterfleet releases test
Listen = 127.0.0.1
Ports = {port}
MotdFile = {tmp_path / "motd"}
PidFile = {tmp_path / "ngircd.pid"}
[Limits]
MaxNickLength = 30
[Options]
PAM = no
Ident = no
DNS = no
"""
    )
    proc = subprocess.Popen(
        ["ngircd", "--nodaemon", "--config", str(conf)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("ngircd did not listen within 20 s")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """A person in the channel."""

    def __init__(self, port: int, nick: str) -> None:
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        self.wait(lambda line: " 001 " in line)
        self.send(f"JOIN {CHANNEL}")
        self.wait(lambda line: " 366 " in line)  # end of NAMES: joined

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\r\n" for line in lines).encode())

    def say(self, text: str) -> None:
        self.send(f"PRIVMSG {CHANNEL} :{text}")

    def wait(self, pred: object, timeout: float = 60) -> str:
        assert callable(pred)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode().rstrip("\r")
                if line.startswith("PING"):
                    self.send("PONG" + line[4:])
                elif pred(line):
                    return line
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                break
            assert chunk, "the IRC server closed the connection"
            self.buffer += chunk
        raise AssertionError(f"{self.nick}: nothing matched within {timeout} s")

    def reply(self, containing: str) -> str:
        """The next message of the bot in the channel containing ``containing``."""
        line = self.wait(
            lambda line: line.startswith(":asterfleet!") and f"PRIVMSG {CHANNEL} :" in line
            and containing in line
        )  # fmt: skip
        return line.split(f"PRIVMSG {CHANNEL} :", 1)[1]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_single(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("upstream", ["github"], indirect=True)
def test_the_channel_hears_releases_and_is_obeyed(
    tmp_path: Path,
    upstream: Upstream,
    image_repo: ImageRepo,
    ircd: int,
    etcd_server: EtcdServer,
) -> None:
    # A knot store with the knot that builds the 22 image; a cluster with two nodes.
    db = f"sqlite:///{tmp_path / 'factory.db'}"
    subprocess.run(
        [*ASTERFLEET, "knot", "add", "asterisk-22", "--git", str(image_repo.bare),
         "--repository", "asterfleet/asterisk", "--db", db],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip

    async def register() -> None:
        async with Etcd(etcd_server.endpoint) as etcd:
            for i in (1, 2):
                rec = NodeRecord(
                    id=f"ast{i}", sip_uri=f"sip:127.0.0.1:{5070 + i};transport=udp",
                    state=NodeState.ACTIVE, version="22.10.1",
                )  # fmt: skip
                await etcd.put(Keyspace("relirc").node(rec.id), rec.to_json())

    asyncio.run(register())

    config = write_config(tmp_path, upstream, image_repo)
    knot_cmd = json.dumps([*ASTERFLEET, "knot", "build", "{knot}", "--json", "--db", db])
    rollout_cmd = json.dumps(
        [*ASTERFLEET, "rollout", "start", "--cluster", "{cluster}", "--version", "{version}",
         "--by", "irc:{nick}", "--etcd", etcd_server.endpoint]
    )  # fmt: skip
    with config.open("a") as f:
        f.write(
            f"""[irc]
server = "127.0.0.1:{ircd}"
channel = "{CHANNEL}"
allow = ["alice"]
console_url = "http://console.test"
knots = {{ "22" = "asterisk-22" }}
build_command = {knot_cmd}
rollout_command = {rollout_cmd}
"""
        )
    alice, mallory = Client(ircd, "alice"), Client(ircd, "mallory")
    watcher = subprocess.Popen(
        [*ASTERFLEET, "releases", "watch", "--config", str(config), "--interval", "3600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # The first check's news reaches the channel.
        news = alice.reply("Asterisk 22.11.0")
        assert "pull request" in news and upstream.pulls[0]["html_url"] in news
        assert "pushed to asterisk-20" in alice.reply("Asterisk 20.9.0")

        mallory.say("!check")
        assert alice.reply("mallory:") == "mallory: !check is only for the nicks on the allow list"
        mallory.say("!status")
        status = alice.reply("last check")
        assert "22: proposed 22.11.0" in status and "20: pushed 20.9.0" in status

        alice.say("!check")
        checked = alice.reply("alice: ")
        assert "branch 22: already-proposed (22.11.0)" in checked
        assert "branch 20: up-to-date (20.9.0)" in checked
        assert len(upstream.seen("POST", upstream.pulls_path())) == 1

        alice.say("!build 22")
        built = alice.reply("alice: build")
        assert (
            built
            == "alice: build asterisk-22#1 queued: http://console.test/knots/asterisk-22/builds/1"
        )
        shown = subprocess.run(
            [*ASTERFLEET, "knot", "show", "asterisk-22", "--json", "--db", db],
            check=True, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        builds = json.loads(shown.stdout)["builds"]
        assert [(b["number"], b["state"], b["triggers"]) for b in builds] == [
            (1, "queued", ["manual"])
        ]

        alice.say("!rollout relirc 22.11.0")
        started = alice.reply("alice: rollout")
        assert started.startswith("alice: rollout of 22.11.0 on relirc started:"), started

        async def read() -> Rollout:
            async with Etcd(etcd_server.endpoint) as etcd:
                return await get_rollout(etcd, Keyspace("relirc"))

        r = asyncio.run(read())
        assert r.target.version == "22.11.0" and r.created_by == "irc:alice"
        assert [n.id for n in r.nodes] == ["ast1", "ast2"]
        # A second one is refused by the rollout itself, and the reason relayed.
        alice.say("!rollout relirc 22.11.0")
        assert "refused" in alice.reply("alice: rollout")
    finally:
        watcher.send_signal(signal.SIGTERM)
        try:
            _, err = watcher.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.communicate()
            raise
        alice.close()
        mallory.close()
    assert watcher.returncode == 0, err
