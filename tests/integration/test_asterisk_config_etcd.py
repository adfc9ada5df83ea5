"""`asterfleet asterisk config --etcd`: the balancers publish their SIP
addresses in their records (balancer run --sip-address), and a box's
pjsip.conf identifies exactly those, read from a real etcd."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import start_single
from asterfleet.fleet.actions import read_fleet
from asterfleet.fleet.keys import Keyspace
from asterfleet.lab.stack import agent_argv
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for

pytestmark = pytest.mark.integration


def published(endpoint: str, cluster: str) -> dict[str, tuple[str, ...]]:
    async def go() -> dict[str, tuple[str, ...]]:
        async with Etcd(endpoint) as etcd:
            view = await read_fleet(etcd, Keyspace(cluster))
        return {b.id: b.sip_addresses for b in view.balancers}

    return asyncio.run(go())


def asterisk_config(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asterfleet", "asterisk", "config", "--out", str(out), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ASTERFLEET_AMI_SECRET": "s3cret", "ASTERFLEET_BALANCERS": ""},
        timeout=120,
    )


def test_config_identifies_the_balancers_published_in_etcd(tmp_path: Path) -> None:
    server = start_single(tmp_path / "etcd")
    balancers: list[ManagedProcess] = []
    try:
        endpoint = server.endpoint
        # Nothing published yet: one clear line, exit 2.
        none = asterisk_config(tmp_path / "none", "--etcd", endpoint, "--cluster", "c1")
        assert none.returncode == 2
        assert "--sip-address" in none.stderr and len(none.stderr.strip().splitlines()) == 1

        # lb1 takes the default (Kamailio's listen sockets), lb2 is told.
        for lb_id, flags, env in (
            ("lb1", [], {"ASTERFLEET_SIP_LISTEN": "udp:10.0.0.2:5060 tcp:10.0.0.2:5060"}),
            ("lb2", ["--sip-address", "10.0.0.3", "--sip-address", "fd00::3"], {}),
        ):
            argv = agent_argv(
                "balancer", "run", "--etcd", endpoint, "--cluster", "c1", "--id", lb_id,
                "--list-file", str(tmp_path / f"{lb_id}.list"),
                # No Kamailio here: the agent publishes its record all the same.
                "--rpc", str(tmp_path / f"{lb_id}.sock"), *flags,
            )  # fmt: skip
            proc = ManagedProcess(lb_id, argv, tmp_path / f"{lb_id}.log", env=env)
            balancers.append(proc.start())
        wait_for(
            lambda: (
                published(endpoint, "c1") == {"lb1": ("10.0.0.2",), "lb2": ("10.0.0.3", "fd00::3")}
            ),
            30,
            what="both balancers' records with their SIP addresses",
        )

        out = tmp_path / "etc"
        done = asterisk_config(out, "--etcd", endpoint, "--cluster", "c1")
        assert done.returncode == 0, done.stderr
        pjsip = (out / "pjsip.conf").read_text()
        matches = [line for line in pjsip.splitlines() if line.startswith("match = ")]
        for address in ("10.0.0.2", "10.0.0.3", "fd00::3"):
            assert f"match = {address}" in matches
        # --balancer wins over etcd.
        given = asterisk_config(
            tmp_path / "given", "--etcd", endpoint, "--cluster", "c1", "--balancer", "10.9.9.9"
        )
        assert given.returncode == 0, given.stderr
        pjsip = (tmp_path / "given" / "pjsip.conf").read_text()
        assert "match = 10.9.9.9" in pjsip and "match = 10.0.0.2" not in pjsip
    finally:
        for proc in balancers:
            proc.stop()
        server.stop()


def test_balancer_run_refuses_a_sip_address_that_is_not_one(tmp_path: Path) -> None:
    done = subprocess.run(
        agent_argv(
            "balancer", "run", "--etcd", "127.0.0.1:1", "--list-file", str(tmp_path / "d.list"),
            "--rpc", str(tmp_path / "k.sock"), "--sip-address", "lb.example",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "lb.example" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _matches(pjsip: Path) -> list[str]:
    text = pjsip.read_text() if pjsip.is_file() else ""
    return [line.removeprefix("match = ") for line in text.splitlines() if line.startswith("match")]


def test_follow_keeps_pjsip_in_step_with_the_balancers(tmp_path: Path) -> None:
    """A balancer added, then one gone, then none: pjsip.conf follows (the last
    addresses stay when none is left), and each change is reloaded. A script
    stands in for the asterisk binary here; test_real_asterisk checks the
    reload against a real Asterisk."""
    server = start_single(tmp_path / "etcd")
    reloads = tmp_path / "reloads"
    fake = tmp_path / "asterisk"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {reloads}\n'
        "echo \"Module 'res_pjsip.so' reloaded successfully.\"\n"
    )
    fake.chmod(0o755)
    procs: dict[str, ManagedProcess] = {}
    metrics_port = free_port()

    def balancer(lb_id: str, address: str) -> None:
        argv = agent_argv(
            "balancer", "run", "--etcd", server.endpoint, "--cluster", "c1", "--id", lb_id,
            "--list-file", str(tmp_path / f"{lb_id}.list"),
            "--rpc", str(tmp_path / f"{lb_id}.sock"), "--sip-address", address,
        )  # fmt: skip
        procs[lb_id] = ManagedProcess(lb_id, argv, tmp_path / f"{lb_id}.log").start()

    try:
        balancer("lb1", "10.0.0.2")
        wait_for(lambda: published(server.endpoint, "c1"), 30, what="lb1's record")
        out = tmp_path / "etc"
        pjsip = out / "pjsip.conf"
        procs["follow"] = ManagedProcess(
            "follow",
            agent_argv(
                "asterisk", "config", "--out", str(out), "--etcd", server.endpoint,
                "--cluster", "c1", "--follow", "--asterisk", str(fake),
                "--follow-metrics-listen", f"127.0.0.1:{metrics_port}",
            ),
            tmp_path / "follow.log",
            env={"ASTERFLEET_AMI_SECRET": "s3cret", "ASTERFLEET_BALANCERS": ""},
        ).start()  # fmt: skip
        wait_for(lambda: _matches(pjsip)[:1] == ["10.0.0.2"], 30, what="the first render")
        assert not reloads.exists()  # nothing changed since the start: no reload

        balancer("lb2", "10.0.0.3")
        wait_for(lambda: "10.0.0.3" in _matches(pjsip), 30, what="lb2 in pjsip.conf")
        assert _matches(pjsip)[:2] == ["10.0.0.2", "10.0.0.3"]
        wait_for(lambda: reloads.exists(), 10, what="a reload")
        assert reloads.read_text().splitlines() == [
            f"-C {out}/asterisk.conf -rx module reload res_pjsip.so"
        ]

        procs.pop("lb1").stop()
        wait_for(lambda: "10.0.0.2" not in _matches(pjsip), 30, what="lb1 gone from pjsip.conf")
        wait_for(lambda: len(reloads.read_text().splitlines()) == 2, 10, what="a second reload")

        def scrape() -> str:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as r:
                return str(r.read().decode())

        # Counted once the reload has returned (just after the script wrote its line).
        ok = 'asterfleet_box_config_reloads_total{module="res_pjsip.so",result="ok"} 2.0'
        wait_for(lambda: ok in scrape(), 10, what="two reloads counted")
        assert 'asterfleet_box_config_changes_total{what="balancers"} 2.0' in scrape()

        procs.pop("lb2").stop()
        wait_for(lambda: not published(server.endpoint, "c1"), 30, what="no balancer record")
        log = procs["follow"].log_path
        wait_for(lambda: "no_balancer_address" in log.read_text(), 10, what="the follower's note")
        assert _matches(pjsip)[:1] == ["10.0.0.3"]  # the last address stays
        assert len(reloads.read_text().splitlines()) == 2
        assert "balancers_changed" in log.read_text()
    finally:
        for proc in procs.values():
            proc.stop()
        server.stop()
