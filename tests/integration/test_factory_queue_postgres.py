"""The build queue on a real PostgreSQL: two workers share it through
SELECT … FOR UPDATE SKIP LOCKED, and a restart recovers interrupted builds."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from asterfleet.factory import queue
from asterfleet.factory.db import open_store
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.store import add_knot
from asterfleet.runtime.ports import free_port

pytestmark = pytest.mark.integration

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def as_postgres(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 is not installed (apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="af-pg-"))
    shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    done = as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    assert done.returncode == 0, done.stderr
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    done = as_postgres(
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(base / "pg.log"),
        "-o",
        opts,
        "-w",
        "start",
    )
    assert done.returncode == 0, done.stderr + (base / "pg.log").read_text()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    eng = open_store(pg_url)
    with eng.begin() as conn:
        for table in ("factory_build_logs", "factory_builds", "factory_knots"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    add_knot(eng, validate_knot({"name": "k", "git_url": "/nowhere", "repository": "a/k"}))
    try:
        yield eng
    finally:
        eng.dispose()


def test_two_workers_claim_each_build_exactly_once(engine: Engine, pg_url: str) -> None:
    wanted = {queue.enqueue(engine, "k", f"refs/heads/b{i}", None, "t").build.id for i in range(40)}
    claimed: dict[str, list[int]] = {"w1": [], "w2": []}
    barrier = threading.Barrier(2)

    def work(name: str) -> None:
        own = open_store(pg_url)  # a machine of its own: its own connections
        barrier.wait()
        for _ in range(100):
            build = queue.claim(own, name)
            if build is None:
                break
            claimed[name].append(build.id)
            queue.set_state(own, build.id, "passed")
        own.dispose()

    threads = [threading.Thread(target=work, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(claimed["w1"]).isdisjoint(claimed["w2"])
    assert set(claimed["w1"]) | set(claimed["w2"]) == wanted
    assert claimed["w1"] and claimed["w2"], "both workers took part"


def test_concurrent_triggers_for_one_ref_make_one_build(engine: Engine, pg_url: str) -> None:
    results: list[queue.Enqueued] = []

    def trigger() -> None:
        own = open_store(pg_url)
        results.append(queue.enqueue(own, "k", "refs/heads/main", None, "webhook"))
        own.dispose()

    threads = [threading.Thread(target=trigger) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert {r.build.number for r in results} == {1}
    assert sum(not r.joined for r in results) == 1
    assert len(queue.get_build(engine, "k", 1).triggers) == 6


def test_restart_keeps_queued_builds_and_fails_interrupted_ones(
    engine: Engine, pg_url: str
) -> None:
    running = queue.enqueue(engine, "k", "refs/heads/a", None, "t").build
    assert queue.claim(engine, "box/0") is not None
    waiting = queue.enqueue(engine, "k", "refs/heads/b", None, "t").build
    engine.dispose()  # the worker's machine "crashes"
    restarted = open_store(pg_url)
    failed = queue.recover(restarted, own_workers=("box/0",))
    assert [b.id for b in failed] == [running.id]
    after = queue.build_by_id(restarted, running.id)
    assert after.state == "failed" and "interrupted" in (after.reason or "")
    assert queue.build_by_id(restarted, waiting.id).state == "queued"
    assert queue.claim(restarted, "box/0") is not None
    restarted.dispose()
