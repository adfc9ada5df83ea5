"""The Statistics page in headless Chromium: per node and per balancer, the
calls, ASR and NER of the window in a table, and SVG charts drawn by the
server; the window is chosen from the page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.capture.store import Store
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in
from tests.integration.test_console_calls_list import console_with_capture, recent
from tests.unit.test_capture_pager import answered, failed

pytestmark = pytest.mark.integration

PASSWORD = "stats-admin-pass"


@pytest.fixture
def console_url(tmp_path: Path) -> Iterator[str]:
    capture_db = str(tmp_path / "capture.db")
    base = int(time.time() * 1_000_000) - 600_000_000  # ten minutes ago
    store = Store(capture_db)
    try:
        for i in range(6):  # 6 calls answered by the node at 10.0.0.3 ...
            store.insert_rows(recent(answered(f"ok-{i}", i * 60, 5), base))
        for i in range(2):  # ... and 2 refused busy
            store.insert_rows(recent(failed(f"busy-{i}", i * 60 + 30), base))
    finally:
        store.close()
    yield from console_with_capture(tmp_path, capture_db, PASSWORD)


def test_the_statistics_page_shows_each_node_and_balancer(console_url: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            sign_in(page, f"{console_url}/stats", "admin", PASSWORD)
            page.wait_for_url("**/stats")
            expect(page.locator("nav a.current")).to_have_text("Statistics")
            node = page.locator('#stats-table tr[data-member="node:ast3"]')
            expect(node.locator(".calls")).to_have_text("6")
            expect(node.locator(".asr")).to_have_text("100.0 %")
            lb = page.locator('#stats-table tr[data-member="balancer:lb1"]')
            expect(lb.locator(".calls")).to_have_text("8")
            expect(lb.locator(".asr")).to_have_text("75.0 %")  # 6 of 8 answered
            expect(lb.locator(".ner")).to_have_text("100.0 %")  # busy is the user's answer
            expect(lb.locator(".codes")).to_have_text("200×6, 486×2")
            expect(page.locator("#total-calls")).to_have_text("8")
            # The charts are SVG from the server: a line per member, visible.
            chart = page.locator("#chart-node-calls svg")
            expect(chart).to_be_visible()
            expect(chart.locator('path.series[data-series="ast3"]')).to_have_count(1)
            box = chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
            expect(page.locator("#chart-balancer-asr svg path.series")).to_have_count(1)
            # Another window: the last 15 minutes still hold every call; the
            # node's link opens its calls.
            page.select_option("#stats-window select[name=window]", "15m")
            page.click("#stats-window button[type=submit]")
            page.wait_for_url("**/stats?window=15m")
            expect(lb.locator(".calls")).to_have_text("8")
            node.locator("a").click()
            page.wait_for_url("**/calls?node=ast3")
            expect(page.locator("#calls-table tbody tr")).to_have_count(6)
            # On a phone neither page scrolls sideways (charts shrink, tables scroll).
            page.set_viewport_size({"width": 390, "height": 800})
            for path in ("/stats", "/calls"):
                page.goto(console_url + path)
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, (path, overflow)
        finally:
            browser.close()
