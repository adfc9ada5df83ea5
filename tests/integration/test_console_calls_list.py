"""The Calls list in headless Chromium, as an operator reads it: by start,
newest first; calls in progress marked with a ticking duration; OPTIONS
probes hidden until asked for; filters (node, duration, text, answer) that
survive as a shareable link and as a saved search; and new calls appearing
live."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.capture.store import Row, Store
from asterfleet.console.process import start_console
from asterfleet.db import FleetAddress, open_database
from asterfleet.runtime.ports import free_port
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in
from tests.unit.test_capture_pager import T0, answered, failed, probe, ringing

pytestmark = pytest.mark.integration

PASSWORD = "calls-list-admin-pass"


def recent(rows: list[Row], base_us: int) -> list[Row]:
    """The helper's calls moved from T0 to ``base_us``."""
    return [(r[0] - T0 + base_us, *r[1:]) for r in rows]


@pytest.fixture
def capture_db(tmp_path: Path) -> Iterator[tuple[str, int]]:
    path = str(tmp_path / "capture.db")
    base = int(time.time() * 1_000_000) - 60_000_000  # a minute ago
    store = Store(path)
    try:
        store.insert_rows(recent(answered("long-call", 0, 50, "X-Tenant: acme\r\n"), base))
        store.insert_rows(recent(answered("short-call", 10, 1), base))
        store.insert_rows(recent(failed("busy-call", 20), base))
        store.insert_rows(recent(answered("live-call", 30, None), base))
        store.insert_rows(recent(ringing("ringing-call", 40), base))
        for i in range(5):
            store.insert_rows(recent(probe(f"probe-{i}", 5 + i * 10), base))
        yield path, base
    finally:
        store.close()


@pytest.fixture
def console_url(tmp_path: Path, capture_db: tuple[str, int]) -> Iterator[str]:
    yield from console_with_capture(tmp_path, capture_db[0], PASSWORD)


def console_with_capture(tmp_path: Path, capture_db: str, password: str) -> Iterator[str]:
    """A console reading ``capture_db``, where node ast3 has held 10.0.0.3:5060
    (the calls' node) for an hour, as the console's etcd watch records it."""
    db = open_database(str(tmp_path / "console.db"))
    try:
        with db.session() as s:
            s.add(FleetAddress(cluster="default", address="10.0.0.3:5060", kind="node",
                               name="ast3", since=time.time() - 3600))  # fmt: skip
    finally:
        db.close()
    running = start_console(
        tmp_path / "console.log",
        etcd=f"127.0.0.1:{free_port()}",
        db=str(tmp_path / "console.db"),
        extra_args=["--capture-db", capture_db],
        env={"ASTERFLEET_ADMIN_PASSWORD": password},
        timeout=120,  # start-up (argon2, imports) is slow on a busy shared machine
    )
    try:
        yield running.url
    finally:
        running.stop()


def test_the_calls_list_tells_the_truth(console_url: str, capture_db: tuple[str, int]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            sign_in(page, f"{console_url}/calls", "admin", PASSWORD)
            page.wait_for_url("**/calls")
            rows = page.locator("#calls-table tbody tr")
            # By start, newest first; the probes are not calls.
            expect(rows).to_have_count(5)
            order = [rows.nth(i).get_attribute("data-call-id") for i in range(5)]
            assert order == ["ringing-call", "live-call", "busy-call", "short-call", "long-call"]

            # Calls in progress say so, and their duration keeps counting.
            live = page.locator('tr[data-call-id="live-call"]')
            expect(live.locator(".badge.state")).to_have_text("in progress")
            expect(page.locator('tr[data-call-id="ringing-call"] .badge.state')).to_have_text(
                "ringing"
            )
            ticking = live.locator(".live-duration")
            first = ticking.inner_text()
            assert first.endswith(" s") and int(first[:-2]) >= 25
            expect(ticking).not_to_have_text(first, timeout=5000)
            expect(page.locator('tr[data-call-id="short-call"] td.num').first).to_have_text(
                "1.001 s"
            )

            # The probes on request; the link reproduces the view.
            page.check("#call-search input[name=options]")
            page.click("#call-search button[type=submit]")
            expect(rows).to_have_count(10)
            assert "options=1" in page.url
            shared = browser.new_page()
            shared.context.add_cookies(page.context.cookies())
            shared.goto(page.url)
            expect(shared.locator("#calls-table tbody tr")).to_have_count(10)
            shared.close()

            # Filters on the whole call: the answer's class, text in a header.
            page.goto(f"{console_url}/calls")
            page.select_option("#call-search select[name=status_class]", "4xx")
            page.click("#call-search button[type=submit]")
            expect(rows).to_have_count(1)
            expect(rows.first).to_have_attribute("data-call-id", "busy-call")
            page.goto(f"{console_url}/calls?text=X-Tenant%3A+acme")
            expect(rows).to_have_count(1)
            expect(rows.first).to_have_attribute("data-call-id", "long-call")

            # By node and duration; the search is saved under a name and
            # opens again from the list of saved searches.
            page.goto(f"{console_url}/calls")
            page.fill("#call-search input[name=node]", "ast3")
            page.click("#call-search button[type=submit]")
            expect(rows).to_have_count(3)  # busy-call and ringing-call never reached a node
            page.fill("#call-search input[name=min_duration]", "10s")
            page.click("#call-search button[type=submit]")
            expect(rows).to_have_count(1)
            expect(rows.first).to_have_attribute("data-call-id", "long-call")
            assert page.get_attribute("#share-link", "href") == "/calls?node=ast3&min_duration=10s"
            page.fill("#save-search input[name=name]", "long calls on ast3")
            page.click("#save-search button[type=submit]")
            saved = page.locator("#saved-searches a", has_text="long calls on ast3")
            expect(saved).to_have_count(1)
            page.goto(f"{console_url}/calls")
            expect(rows).to_have_count(5)
            saved.click()
            expect(rows).to_have_count(1)
            expect(page.locator("#call-search input[name=node]")).to_have_value("ast3")
            page.fill("#call-search input[name=node]", "ast99")
            page.click("#call-search button[type=submit]")
            expect(page.locator(".flash.bad")).to_contain_text("node 'ast99'")

            # Live: a call captured now appears at the top without a reload.
            page.goto(f"{console_url}/calls")
            expect(rows).to_have_count(5)
            page.check("#live-tail")
            store = Store(capture_db[0], create=False)
            try:
                now = int(time.time() * 1_000_000)
                store.insert_rows(recent(answered("new-call", 0, None), now))
                store.insert_rows(recent(probe("new-probe", 0), now))
            finally:
                store.close()
            expect(rows.first).to_have_attribute("data-call-id", "new-call", timeout=15_000)
            expect(rows).to_have_count(6)
            expect(rows.first.locator(".badge.state")).to_have_text("in progress")

            # A tail that cannot go on from its position (here a made-up
            # one) says so on the page, and goes on from now.
            page.goto(f"{console_url}/calls")
            page.eval_on_selector(
                "#live-tail", "el => el.setAttribute('data-stream', '/calls/live?after=made-up')"
            )
            page.check("#live-tail")
            expect(page.locator("#live-note")).to_contain_text(
                "not one this console gave", timeout=15_000
            )
        finally:
            browser.close()
