"""The Rollouts page in a real headless Chromium, against a real etcd: an
operator watches a rollout move without reloading, pauses it, resumes it and
aborts it from the page; etcd holds what the page did, signed with who."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from asterfleet.console.process import RunningConsole, start_console
from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import EtcdServer, start_single
from asterfleet.fleet.keys import Keyspace
from asterfleet.rollout.model import NodeProgress, Phase, Rollout, Target, parse_rollout
from asterfleet.runtime.process import wait_for
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")

PASSWORD = "rollout-admin-pass"
KS = Keyspace("rollouts")
V1, V2 = Target(version="v1"), Target(version="v2")


def in_thread(coro_fn):  # type: ignore[no-untyped-def]
    """asyncio.run in its own thread: Playwright's sync API owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn()).result(timeout=30)


def write_rollout(endpoint: str, r: Rollout) -> None:
    async def go() -> None:
        async with Etcd(endpoint) as etcd:
            await etcd.put(KS.rollout(r.id), r.to_json())

    in_thread(go)


def read_rollout(endpoint: str, rollout_id: str) -> Rollout:
    async def go() -> Rollout:
        async with Etcd(endpoint) as etcd:
            kv = await etcd.get(KS.rollout(rollout_id))
            assert kv is not None
            return parse_rollout(kv.key, kv.value)

    result: Rollout = in_thread(go)
    return result


def rollout(phase_a: Phase) -> Rollout:
    return Rollout(
        id="r-page",
        cluster=KS.cluster,
        target=V2,
        gate_calls=5,
        created_by="ci",
        nodes=[
            NodeProgress(id="ast1", phase=phase_a, target=V2, previous=V1, since=1.7e9),
            NodeProgress(id="ast2", target=V2),
        ],
    )


@dataclass
class Console:
    url: str
    etcd: EtcdServer


@pytest.fixture
def console() -> Iterator[Console]:
    work = Path(tempfile.mkdtemp(prefix="af-rollout-console-"))
    etcd = start_single(work)
    running: RunningConsole | None = None
    try:
        running = start_console(
            work / "console.log",
            etcd=etcd.endpoint,
            db=str(work / "console.db"),
            cluster=KS.cluster,
            env={"ASTERFLEET_ADMIN_PASSWORD": PASSWORD},
            timeout=90,
        )
        url = running.url
        wait_for(
            lambda: httpx.get(f"{url}/healthz", timeout=2).json()["etcd_connected"],
            60,
            interval=0.1,
            what="the console following etcd",
        )
        yield Console(url, etcd)
    finally:
        if running is not None:
            running.stop()
        etcd.stop()


def test_pause_resume_and_abort_a_rollout_from_the_page(console: Console) -> None:
    write_rollout(console.etcd.endpoint, rollout(Phase.DRAINING))
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            sign_in(page, f"{console.url}/rollouts", "admin", PASSWORD)
            page.wait_for_selector("#rollout-r-page[data-state=running]")
            assert "Rollouts" in page.inner_text("nav")
            assert page.inner_text("#rollout-r-page tr[data-node=ast1]").count("draining") == 1
            page.wait_for_selector("#live-status.on")
            page.evaluate("window.__sameDocument = true")

            # The controller moves a node: the page follows without a reload.
            write_rollout(console.etcd.endpoint, rollout(Phase.REPLACING))
            page.wait_for_selector("#rollout-r-page tr[data-node=ast1][data-phase=replacing]")
            assert page.evaluate("window.__sameDocument") is True

            page.click("#rollout-r-page button:has-text('Pause')")
            page.wait_for_selector("#rollout-r-page[data-state=paused]")
            assert "paused by admin@console" in page.inner_text("#rollout-r-page")
            assert read_rollout(console.etcd.endpoint, "r-page").state.value == "paused"

            page.click("#rollout-r-page button:has-text('Resume')")
            page.wait_for_selector("#rollout-r-page[data-state=running]")

            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#rollout-r-page button:has-text('Abort')")
            page.wait_for_selector("#rollout-r-page[data-state=aborted]")
            assert "aborted by admin@console" in page.inner_text("#rollout-r-page")
            assert page.locator("#rollout-r-page button").count() == 0  # nothing left to do
            stored = read_rollout(console.etcd.endpoint, "r-page")
            assert (stored.state.value, stored.reason) == ("aborted", "aborted by admin@console")

        finally:
            browser.close()
