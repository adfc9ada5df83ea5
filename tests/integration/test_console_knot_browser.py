"""Adding a knot through the console's form in a real headless Chromium: the
knot is listed afterwards and stored where the CLI and the worker read it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.factory.store import get_knot
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in
from tests.integration.console_images import ConsoleWithImages, console_with_images

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")

PASSWORD = "alice-knot-form-pw"


@pytest.fixture(scope="module")
def console() -> Iterator[ConsoleWithImages]:
    work = Path(tempfile.mkdtemp(prefix="af-cknot-"))
    try:
        with console_with_images(work, {"alice": PASSWORD}) as running:
            yield running
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_knot_added_through_the_form_is_listed(console: ConsoleWithImages) -> None:
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        try:
            sign_in(page, f"{console.url}/knots", "alice", PASSWORD)
            page.click("#add-knot")
            page.fill("input[name=name]", "site")
            page.fill("input[name=git_url]", "https://git.example/alice/site.git")
            page.fill("input[name=repository]", "alice/site")
            page.fill("input[name=test_command]", "sh -c 'test -f /srv/index.html'")
            page.check("input[name=webhook]")
            page.click("#knot-form button[type=submit]")
            secret = page.locator("#webhook-secret").inner_text()
            assert len(secret) >= 32

            page.goto(f"{console.url}/knots")
            row = page.locator("#knots tr", has_text="site")
            assert "alice/site" in row.inner_text()
            assert secret not in page.content()
        finally:
            browser.close()
    knot = get_knot(console.engine, "site")
    assert knot.test_command == "sh -c 'test -f /srv/index.html'"
    assert knot.owners == ["alice"] and knot.triggers.webhook_secret == secret
