"""`asterfleet registry serve --workers 2`: /metrics counts every worker's
requests, whichever worker answers the scrape, and a worker that is killed
and replaced loses no counts and doubles none.

Real processes on loopback: the token server and its two workers (no
Distribution registry is needed to issue anonymous tokens)."""

from __future__ import annotations

import glob
import os
import signal
import stat
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from asterfleet.auth import add_user, create_token
from asterfleet.db import open_database
from asterfleet.registry.config import write_config
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

ISSUED = "asterfleet_registry_tokens_issued_total"


@dataclass
class Server:
    process: ManagedProcess
    port: int
    private: int  # --metrics-listen
    scrape_token: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> set[int]:
        """The supervisor's worker processes, as `ps --ppid` shows them."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return {int(c) for c in children if b"spawn_main" in _cmdline(int(c))}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def _metrics_dir(worker: int) -> str:
    env = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
    found = [e.split(b"=", 1)[1] for e in env if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return found[0].decode()


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def _served_by(directory: str, worker: int) -> float:
    """Tokens one worker issued, from its own metrics file."""
    files = glob.glob(os.path.join(directory, f"counter_{worker}.db"))
    for family in MultiProcessCollector.merge(files):  # type: ignore[no-untyped-call]
        for s in family.samples:
            if s.name == ISSUED and s.labels.get("grant") == "anonymous":
                return float(s.value)
    return 0.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port, private = free_port(), free_port()
    while private == port:
        private = free_port()
    config = tmp_path / "registry"
    # The registry itself is never started: nothing here needs it.
    write_config(config, f"http://127.0.0.1:{port}/token", "reg-lab", listen="127.0.0.1:9")
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "prom", "prom-secret-1")
    scrape = create_token(db, "prom", "prometheus", ("metrics",)).token
    db.close()
    process = ManagedProcess(
        "registry-serve",
        [sys.executable, "-m", "asterfleet", "registry", "serve",
         "--config-dir", str(config), "--port", str(port), "--workers", "2",
         "--db", f"sqlite:///{tmp_path / 'factory.db'}",
         "--console-db", str(tmp_path / "console.db"),
         "--reconcile-interval", "3600",
         "--metrics-listen", f"127.0.0.1:{private}"],
        tmp_path / "registry-serve.log",
    ).start()  # fmt: skip
    running = Server(process, port, private, scrape)
    try:
        wait_for(lambda: _workers_up(running) == 2, 60, what="two workers serving")
        yield running
    finally:
        process.stop(grace=10)


def _workers_up(server: Server) -> float:
    text = httpx.get(f"http://127.0.0.1:{server.private}/metrics", timeout=5).text
    return _sample(text, "asterfleet_registry_workers")


def _token(server: Server) -> None:
    # A new connection each time: the kernel hands it to either worker.
    resp = httpx.get(f"{server.base}/token", params={"service": "reg-lab"}, timeout=10)
    assert resp.status_code == 200, resp.text


def _issue_until_served_by(server: Server, workers: set[int]) -> int:
    """Issue tokens in batches until each of ``workers`` has issued some; how many."""
    directory = _metrics_dir(next(iter(workers)))
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while sent < 2000:
            list(pool.map(lambda _: _token(server), range(40)))
            sent += 40
            if all(_served_by(directory, w) > 0 for w in workers):
                return sent
    pytest.fail(f"2000 token requests never reached every worker of {workers}")


def _scrapes(server: Server, times: int = 6) -> list[float]:
    """Issued-token counts from several scrapes: on --port with Prometheus'
    token (each on a new connection, so either worker answers) and on
    --metrics-listen."""
    seen = []
    auth = {"Authorization": f"Bearer {server.scrape_token}"}
    for _ in range(times):
        resp = httpx.get(f"{server.base}/metrics", headers=auth, timeout=5)
        assert resp.status_code == 200
        seen.append(_sample(resp.text, ISSUED, grant="anonymous"))
    private = httpx.get(f"http://127.0.0.1:{server.private}/metrics", timeout=5).text
    seen.append(_sample(private, ISSUED, grant="anonymous"))
    return seen


def test_every_scrape_counts_every_workers_tokens(server: Server) -> None:
    workers = server.workers()
    assert len(workers) == 2
    directory = _metrics_dir(next(iter(workers)))
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700  # the counts are private

    sent = _issue_until_served_by(server, workers)

    assert _scrapes(server) == [sent] * 7
    # /metrics on the clients' port still needs Prometheus' token.
    assert httpx.get(f"{server.base}/metrics", timeout=5).status_code == 401

    server.process.stop(grace=10)
    assert not os.path.exists(directory)  # removed with the server


def test_a_killed_worker_loses_no_counts_and_doubles_none(server: Server) -> None:
    first = server.workers()
    sent = _issue_until_served_by(server, first)
    victim = min(first)

    os.kill(victim, signal.SIGKILL)
    # The supervisor replaces it, and marks it dead: the live gauge counts
    # the two workers serving, not the one that died.
    wait_for(
        lambda: len(server.workers()) == 2 and victim not in server.workers(),
        60,
        what="a replacement worker",
    )
    wait_for(lambda: _workers_up(server) == 2, 60, what="the workers gauge back at 2")
    now = server.workers()
    replacement = now - first
    assert len(replacement) == 1

    # The dead worker's tokens are still counted, once.
    assert _scrapes(server) == [sent] * 7
    sent += _issue_until_served_by(server, now)
    assert _scrapes(server) == [sent] * 7
