"""The console in a real headless Chromium, against a real etcd.

An operator logs in, sees the nodes, drains one and watches its state change
without reloading the page; the wrong password, a POST without the CSRF token
and a page asked for without a session are all turned away.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from asterfleet.console.process import RunningConsole, start_console
from asterfleet.etcd_client import Etcd
from asterfleet.etcdtools.server import EtcdServer, start_single
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import BalancerStatus, NodeRecord, NodeState
from asterfleet.runtime.process import wait_for
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")

PASSWORD = "lab-admin-pass"
CLUSTER = "browser"
KS = Keyspace(CLUSTER)


def run_async(fn: Callable[[], Coroutine[object, object, None]]) -> None:
    """asyncio.run in its own thread: Playwright's sync API owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, fn()).result(timeout=30)


def put_node(
    endpoint: str, node_id: str, state: NodeState = NodeState.ACTIVE, **kw: object
) -> None:
    """What a node agent writes: its record under a lease."""

    async def go() -> None:
        async with Etcd(endpoint) as etcd:
            lease = await etcd.grant(600)  # outlives a slow module on a busy machine
            rec = NodeRecord.model_validate(
                {
                    "id": node_id,
                    "sip_uri": f"sip:127.0.0.1:{5060 + int(node_id[-1])};transport=udp",
                    "state": state,
                    "weight": 10,
                    "active_calls": 2,
                    "version": "20.11.0",
                    "started_at": 1.7e9,
                    **kw,
                }
            )
            await etcd.put(KS.node(node_id), rec.to_json(), lease=lease)

    run_async(go)


def put_balancer(endpoint: str, lb_id: str, list_hash: str) -> None:
    async def go() -> None:
        async with Etcd(endpoint) as etcd:
            lease = await etcd.grant(600)  # outlives a slow module on a busy machine
            status = BalancerStatus(id=lb_id, revision=7, list_hash=list_hash, nodes=3, routable=3)
            await etcd.put(KS.balancer(lb_id), status.to_json(), lease=lease)

    run_async(go)


@dataclass
class Console:
    url: str
    etcd: EtcdServer


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    work = Path(tempfile.mkdtemp(prefix="af-console-"))
    etcd = start_single(work)
    running: RunningConsole | None = None
    try:
        for i in (1, 2, 3):
            put_node(etcd.endpoint, f"node-{i}")
        put_balancer(etcd.endpoint, "lb-a", "abc123")
        running = start_console(
            work / "console.log",
            etcd=etcd.endpoint,
            db=str(work / "console.db"),
            cluster=CLUSTER,
            env={"ASTERFLEET_ADMIN_PASSWORD": PASSWORD},
            timeout=120,  # a busy machine: the imports alone may take half a minute
        )
        url = running.url
        wait_for(
            lambda: httpx.get(f"{url}/healthz", timeout=1).json()["etcd_connected"],
            30,
            interval=0.1,
            what="the console following etcd",
        )
        yield Console(url, etcd)
    finally:
        if running is not None:
            running.stop()
        etcd.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context()  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()


def log_in(page: object, url: str, password: str = PASSWORD) -> None:
    sign_in(page, f"{url}/fleet", "admin", password)


def test_a_page_without_a_session_goes_to_login(console: Console, page: object) -> None:
    page.goto(f"{console.url}/balancers")  # type: ignore[attr-defined]
    assert "/login?next=/balancers" in page.url  # type: ignore[attr-defined]
    assert page.locator("h1").inner_text() == "Log in"  # type: ignore[attr-defined]


def test_a_wrong_password_is_rejected(console: Console, page: object) -> None:
    log_in(page, console.url, "not-the-password")
    page.wait_for_selector("#login-error")  # type: ignore[attr-defined]
    assert "Wrong user name or password" in page.inner_text("#login-error")  # type: ignore[attr-defined]
    assert "/login" in page.url  # type: ignore[attr-defined]


def test_drain_a_node_and_watch_it_change_without_reloading(console: Console, page: object) -> None:
    log_in(page, console.url)
    page.wait_for_selector("#node-node-3")  # type: ignore[attr-defined]
    for i in (1, 2, 3):
        assert page.inner_text(f"#node-node-{i} [data-field=state]") == "active"  # type: ignore[attr-defined]
    page.wait_for_selector("#live-status.on")  # type: ignore[attr-defined]
    # A marker that a reload would erase.
    page.evaluate("window.__sameDocument = true")  # type: ignore[attr-defined]
    page.once("dialog", lambda dialog: dialog.accept())  # type: ignore[attr-defined]
    page.click("#node-node-2 button[value=drain]")  # type: ignore[attr-defined]
    page.wait_for_selector("#node-node-2[data-state=draining]")  # type: ignore[attr-defined]
    assert page.inner_text("#node-node-2 [data-field=state]") == "draining"  # type: ignore[attr-defined]
    assert "admin@console" in page.inner_text("#node-node-2")  # type: ignore[attr-defined]
    # A change made by an agent, not through the page, arrives too.
    put_node(console.etcd.endpoint, "node-3", NodeState.UNHEALTHY)
    page.wait_for_selector("#node-node-3[data-state=unhealthy]")  # type: ignore[attr-defined]
    put_node(console.etcd.endpoint, "node-4")
    page.wait_for_selector("#node-node-4[data-state=active]")  # type: ignore[attr-defined]
    assert page.evaluate("window.__sameDocument") is True  # type: ignore[attr-defined]
    # Undrain from the page.
    page.click("#node-node-2 button[value=undrain]")  # type: ignore[attr-defined]
    page.wait_for_selector("#node-node-2[data-state=active]")  # type: ignore[attr-defined]
    assert page.evaluate("window.__sameDocument") is True  # type: ignore[attr-defined]
    # The console recorded what happened, one event per change, and who did it.
    page.goto(f"{console.url}/events?node=node-2")  # type: ignore[attr-defined]
    rows = page.locator("#events-table tbody tr").evaluate_all(  # type: ignore[attr-defined]
        "rows => rows.map(r => [r.dataset.kind, r.cells[3].innerText])"
    )
    assert ["undrained", "admin@console"] in rows and ["draining", "admin@console"] in rows
    assert len([r for r in rows if r[0] in ("draining", "undrained")]) == 2
    page.goto(f"{console.url}/events?kind=unhealthy")  # type: ignore[attr-defined]
    assert "node-3" in page.inner_text("#events-table")  # type: ignore[attr-defined]


def test_a_post_without_the_csrf_token_is_rejected(console: Console, page: object) -> None:
    log_in(page, console.url)
    page.wait_for_selector("#node-node-1")  # type: ignore[attr-defined]
    status = page.evaluate(  # type: ignore[attr-defined]
        """() => fetch('/fleet/nodes/node-1/drain', {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'note=x'})
             .then(r => r.status)"""
    )
    assert status == 403
    forged = page.evaluate(  # type: ignore[attr-defined]
        """() => fetch('/fleet/nodes/node-1/drain', {method: 'POST',
             headers: {'X-CSRF-Token': 'forged'}}).then(r => r.status)"""
    )
    assert forged == 403
    page.reload()  # type: ignore[attr-defined]
    assert page.inner_text("#node-node-1 [data-field=state]") == "active"  # type: ignore[attr-defined]


def test_the_balancers_page_shows_agreement(console: Console, page: object) -> None:
    log_in(page, console.url)
    page.goto(f"{console.url}/balancers")  # type: ignore[attr-defined]
    assert page.inner_text("#agreement") == "all agree"  # type: ignore[attr-defined]
    put_balancer(console.etcd.endpoint, "lb-b", "def456")
    page.wait_for_selector("#agreement.bad")  # type: ignore[attr-defined]
    assert "2 different lists" in page.inner_text("#agreement")  # type: ignore[attr-defined]


def test_node_page_drained_and_events_credit_who_acted(console: Console, page: object) -> None:
    """A node id is a link to its page; a drain from the CLI is credited to
    the CLI user; when its agent reports no call left the node is "drained"
    (page, events, metrics); an undrain from the page is credited to the
    console user, never to the drain's author."""
    put_node(console.etcd.endpoint, "node-5", active_calls=3)
    log_in(page, console.url)
    page.wait_for_selector("#node-node-5")  # type: ignore[attr-defined]
    page.click("#node-node-5 td.id a")  # type: ignore[attr-defined]
    page.wait_for_url("**/fleet/nodes/node-5")  # type: ignore[attr-defined]
    assert page.get_attribute("#node-state", "data-state") == "active"  # type: ignore[attr-defined]
    drained = subprocess.run(
        [sys.executable, "-m", "asterfleet", "fleet", "drain", "node-5", "--note", "disk",
         "--etcd", console.etcd.endpoint, "--cluster", CLUSTER, "--by", "root@cli"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert drained.returncode == 0, drained.stderr
    put_node(console.etcd.endpoint, "node-5", active_calls=0)  # its last call ended

    def node_page_says(state: str) -> bool:
        page.goto(f"{console.url}/fleet/nodes/node-5")  # type: ignore[attr-defined]
        return page.get_attribute("#node-state", "data-state") == state  # type: ignore[attr-defined]

    wait_for(lambda: node_page_says("drained"), 15, what="node-5 drained on its page")
    why = page.inner_text("#node-why")  # type: ignore[attr-defined]
    assert "drain (by root@cli: disk)" in why and "0 in progress" in why
    # /metrics needs a login: the browser's session is one.
    metrics = page.request.get(f"{console.url}/metrics").text()  # type: ignore[attr-defined]
    assert 'asterfleet_console_fleet_nodes{state="drained"} 1.0' in metrics
    page.click("#node-actions button[value=undrain]")  # type: ignore[attr-defined]
    page.wait_for_url("**/fleet/nodes/node-5?msg=*")  # type: ignore[attr-defined]
    wait_for(lambda: node_page_says("active"), 15, what="node-5 active again")

    def events() -> list[list[str]]:
        page.goto(f"{console.url}/fleet/nodes/node-5")  # type: ignore[attr-defined]
        rows: list[list[str]] = page.locator("#node-events tbody tr[data-kind]").evaluate_all(  # type: ignore[attr-defined]
            "rows => rows.map(r => [r.dataset.kind, r.cells[2].innerText])"
        )
        return rows

    wait_for(lambda: ["undrained", "admin@console"] in events(), 15, what="the undrain event")
    got = events()
    assert ["draining", "root@cli"] in got and ["drained", "agent"] in got
    assert ["joined", "agent"] in got
    history = page.inner_text("#node-history")  # type: ignore[attr-defined]
    assert "root@cli" in history and "admin@console" in history
    page.goto(f"{console.url}/events?actor=root%40cli")  # type: ignore[attr-defined]
    assert page.locator("#events-table tbody tr[data-kind]").count() == 1  # type: ignore[attr-defined]


def test_the_first_nodes_a_console_sees_have_joined(console: Console, page: object) -> None:
    """The nodes registered before the console started are "joined" events too."""
    log_in(page, console.url)
    page.goto(f"{console.url}/events?kind=joined&node=node-1")  # type: ignore[attr-defined]
    assert "node-1 joined set 1" in page.inner_text("#events-table")  # type: ignore[attr-defined]


def test_a_change_replaces_only_its_row(console: Console, page: object) -> None:
    """Live updates are per row, keyed by node id: a change on one node
    replaces that row and leaves every other row element as it was."""
    log_in(page, console.url)
    page.wait_for_selector("#live-status.on")  # type: ignore[attr-defined]
    page.evaluate(  # type: ignore[attr-defined]
        """() => { window.__rows = {};
                   document.querySelectorAll('#fleet-rows tr[data-node]')
                     .forEach(tr => { window.__rows[tr.dataset.node] = tr; }); }"""
    )
    put_node(console.etcd.endpoint, "node-1", active_calls=42)
    page.wait_for_selector("#node-node-1 [data-field=calls]:has-text('42')")  # type: ignore[attr-defined]
    same = page.evaluate(  # type: ignore[attr-defined]
        """() => Object.entries(window.__rows)
                 .filter(([id, tr]) => document.getElementById('node-' + id) === tr)
                 .map(([id]) => id)"""
    )
    assert "node-1" not in same and len(same) >= 2, same  # only node-1's row was replaced


def test_counts_filter_and_the_page_never_scrolls_sideways(
    console: Console, browser: object
) -> None:
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 800})  # type: ignore[attr-defined]
        page = context.new_page()
        page.set_default_timeout(60_000)  # six pages at two widths on a busy machine
        try:
            log_in(page, console.url)
            page.wait_for_selector("#fleet-rows")
            for path in (
                "/fleet",
                "/fleet/nodes/node-1",
                "/balancers",
                "/events",
                "/calls",
                "/knots",
            ):
                page.goto(console.url + path)
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, (width, path, overflow)
            page.goto(console.url + "/fleet")
            page.click("#fleet-summary a[data-count=active]")
            page.wait_for_url("**/fleet?state=active")
            states = page.locator("#fleet-rows tr").evaluate_all(
                "rs => rs.map(r => r.dataset.state)"
            )
            assert states and set(states) == {"active"}
        finally:
            context.close()


def test_a_long_value_is_cut_shown_whole_on_hover_and_copied_whole(
    console: Console, browser: object
) -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    image = f"registry.example.org:5000/telephony/asterisk-22-certified@{digest}"
    put_node(console.etcd.endpoint, "node-8", version=image, labels={"digest": digest})
    for width in (1280, 390):
        context = browser.new_context(  # type: ignore[attr-defined]
            viewport={"width": width, "height": 800},
            permissions=["clipboard-read", "clipboard-write"],
        )
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            log_in(page, console.url)
            page.goto(console.url + "/fleet/nodes/node-8")
            value = page.locator("[data-field=version] .long .clip")
            value.wait_for()
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (width, overflow)
            # Cut on screen (the text is wider than its box), whole on hover.
            cut = value.evaluate("e => e.scrollWidth > e.clientWidth")
            assert cut, (width, value.bounding_box())
            assert value.get_attribute("title") == image
            box = page.locator("[data-field=version] button.copy").bounding_box()
            assert box is not None and box["x"] + box["width"] <= width, (width, box)
            page.click("[data-field=version] button.copy")
            page.locator("[data-field=version] button.copy", has_text="Copied").wait_for()
            assert page.evaluate("navigator.clipboard.readText()") == image
            page.click("[data-field=labels] button.copy")
            assert page.evaluate("navigator.clipboard.readText()") == f"digest={digest}"
        finally:
            context.close()
