"""Fixtures that run a real cluster: etcd, Kamailio, SIPp, agents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.errors import MissingBinary
from asterfleet.lab.stack import Stack, StackOptions
from asterfleet.testing.postgres import PgSandbox


@pytest.fixture
def postgres() -> Iterator[PgSandbox]:
    """A PostgreSQL of its own for one test; skipped where it is not installed."""
    try:
        pg = PgSandbox()
    except MissingBinary as exc:
        pytest.skip(f"PostgreSQL is not installed ({exc})")
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """etcd + Kamailio + balancer agent, no nodes yet; stopped after the test."""
    st = Stack(tmp_path / "stack", StackOptions(cluster="t"))
    try:
        st.start()
        yield st
    except BaseException:
        _dump_logs(st)
        raise
    finally:
        st.stop()


def _dump_logs(st: Stack) -> None:
    for log in sorted(st.work_dir.rglob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-15:]
        print(f"==== {log} ====")
        print("\n".join(text))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        # Every stack the test used (``stack``, ``ha_stack``, ...): the logs
        # are all a CI run leaves to read.
        for st in getattr(item, "funcargs", {}).values():
            if isinstance(st, Stack):
                _dump_logs(st)
