"""What the commands that run most often load, doing their real work (issue 9).

tests/unit/test_cli_imports.py checks `--help` and `--version`; here the
node agent, the balancer agent and `fleet ls --json` run against a real
etcd, and at their exit each lists ``sys.modules``. What they must not load
is what bench/cli_startup.py found costing time and memory for nothing:
Rich and Pygments (through structlog, or a console nothing prints to),
greenlet (structlog's deprecated thread-local context), httpx for a
Kamailio reached over its unix socket, and pydantic's TypeAdapter (Typer
0.29 builds one per option). Timings stay in the bench.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.etcdtools.server import EtcdServer, start_single
from asterfleet.runtime.process import wait_for
from tests.unit.test_cli_imports import PROBE, PRODUCT_HEAVY, loaded

pytestmark = pytest.mark.integration

CLUSTER = "imports"

# Never in an agent or a JSON listing.
NOT_NEEDED = (
    "rich",
    "pygments",
    "greenlet",
    "httpx",
    "pydantic.type_adapter",
    "typer._adapters",
)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = start_single(tmp_path / "etcd")
    try:
        yield server
    finally:
        server.stop()


class Probed:
    """An asterfleet command run through the import probe, in the background."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE, json.dumps(args)],
            stdout=subprocess.DEVNULL,
            stderr=self.handle,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> set[str]:
        """SIGTERM, wait for the exit; the modules it had loaded."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.handle.close()
        text = self.text()
        assert "\nMODULES " in text, f"no module list; the command said:\n{text[-2000:]}"
        modules: set[str] = set(json.loads(text.rsplit("\nMODULES ", 1)[1]))
        return modules


def fleet_ls(endpoint: str) -> tuple[dict[str, object], set[str]]:
    args = ["fleet", "ls", "--json", "--etcd", endpoint, "--cluster", CLUSTER]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    listing: dict[str, object] = json.loads(done.stdout)
    return listing, set(json.loads(done.stderr.rsplit("\nMODULES ", 1)[1]))


def node_ids(listing: dict[str, object]) -> list[str]:
    nodes = listing["nodes"]
    assert isinstance(nodes, list)
    return sorted(str(n["id"]) for n in nodes)


def test_agents_and_fleet_ls_load_only_what_they_use(tmp_path: Path, etcd: EtcdServer) -> None:
    node = Probed(
        [
            "node",
            "run",
            "--etcd",
            etcd.endpoint,
            "--cluster",
            CLUSTER,
            "--id",
            "ast1",
            "--sip-uri",
            "sip:127.0.0.1:5999;transport=udp",
            "--probe",
            "none",
            "--drain-timeout",
            "0",
        ],
        tmp_path / "node.log",
    )
    # No Kamailio listens on the socket: the balancer keeps trying, which is
    # enough to show what a balancer on a unix socket loads.
    balancer = Probed(
        [
            "balancer",
            "run",
            "--etcd",
            etcd.endpoint,
            "--cluster",
            CLUSTER,
            "--id",
            "lb1",
            "--list-file",
            str(tmp_path / "dispatcher.list"),
            "--rpc",
            str(tmp_path / "kamailio_rpc.sock"),
        ],
        tmp_path / "balancer.log",
    )
    try:
        wait_for(lambda: "registering" in node.text(), 60, what="the node agent registering")
        listing: dict[str, object] = {}

        def listed() -> bool:
            nonlocal listing
            listing, _ = fleet_ls(etcd.endpoint)
            return node_ids(listing) == ["ast1"]

        wait_for(listed, 30, interval=0.5, what="ast1 in fleet ls")
        wait_for(
            lambda: (
                "ast1" in (tmp_path / "dispatcher.list").read_text(errors="replace")
                if (tmp_path / "dispatcher.list").exists()
                else False
            ),
            60,
            what="the balancer writing ast1 into its list",
        )
        listing, ls_modules = fleet_ls(etcd.endpoint)
        assert node_ids(listing) == ["ast1"]
    finally:
        node_modules = node.stop()
        balancer_modules = balancer.stop()

    assert "asterfleet.node.agent" in node_modules  # the probe saw a real agent
    assert "asterfleet.balancer.agent" in balancer_modules
    assert "asterfleet.fleet.view" in ls_modules
    for modules in (node_modules, balancer_modules, ls_modules):
        assert not loaded(modules, NOT_NEEDED + PRODUCT_HEAVY)
