"""Launching Debian's Chromium for the console's browser tests and screenshots.

Playwright drives the system browser: its own browser downloads cannot work
on machines without the public internet. The flags keep Chromium from
reaching out to the network at start.
"""

from __future__ import annotations

from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def launch(playwright: Any) -> Any:
    """A headless Chromium from a ``sync_playwright()`` handle."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))


def log_in(page: Any, url: str, username: str, password: str) -> None:
    """Open ``url`` (a console page) and submit the login form it shows.

    It does not wait for the result: the caller waits for what it expects
    (the page, or the error of a wrong password).
    """
    page.goto(url)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
