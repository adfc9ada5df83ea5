"""The Builds and Images pages in a real headless Chromium: a build's log
lines arrive live while the page is open, the state flips when it finishes,
and a tag's page offers its pull command."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from asterfleet.factory import queue
from asterfleet.factory.dockerfiles import store_dockerfile
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.logs import BuildLog
from asterfleet.factory.store import add_knot
from asterfleet.registry.schema import cat_repositories, cat_tags
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in
from tests.integration.console_images import ConsoleWithImages, console_with_images

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")

PASSWORD = "alice-browser-pw"
DIGEST = "sha256:" + "ef" * 32


@pytest.fixture(scope="module")
def console() -> Iterator[ConsoleWithImages]:
    work = Path(tempfile.mkdtemp(prefix="af-cimg-"))
    try:
        with console_with_images(work, {"alice": PASSWORD}) as running:
            add_knot(
                running.engine,
                validate_knot(
                    {
                        "name": "app",
                        "git_url": "/src/app",
                        "repository": "alice/app",
                        "owners": ["alice"],
                    }
                ),
            )
            now = dt.datetime.now(dt.UTC)
            with running.engine.begin() as conn:
                conn.execute(insert(cat_repositories).values(name="alice/app", updated_at=now))
                conn.execute(
                    insert(cat_tags).values(
                        repository="alice/app",
                        tag="1",
                        digest=DIGEST,
                        media_type="application/vnd.oci.image.manifest.v1+json",
                        size=2048,
                        created=now,
                        platforms=["linux/amd64"],
                        layers=[{"digest": "sha256:" + "12" * 32, "size": 1500, "media_type": "x"}],
                        updated_at=now,
                    )
                )
            yield running
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


def test_build_log_arrives_live_and_tag_page_offers_the_pull_command(
    console: ConsoleWithImages, browser: object
) -> None:
    engine = console.engine
    build = queue.enqueue(engine, "app", "refs/heads/main", None, "test").build
    queue.claim(engine, "browser-test")
    blog = BuildLog(engine, build.id)
    blog.line("step 1/3: FROM scratch")
    store_dockerfile(engine, build.id, "Dockerfile", "FROM scratch\nCOPY motd /etc/motd\n")

    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        sign_in(page, f"{console.url}/knots/app/builds/{build.number}", "alice", PASSWORD)
        log = page.locator("#build-log")
        log.filter(has_text="step 1/3").wait_for()
        page.locator("[data-live-status].on").wait_for()  # the stream is open

        # Written by the "worker" while the page is open: it must appear without a reload.
        blog.line("step 2/3: COPY motd /etc/motd")
        log.filter(has_text="step 2/3").wait_for()
        blog.line("step 3/3: done")
        queue.set_state(engine, build.id, "passed", digest=DIGEST, image="alice/app:1", tags=["1"])
        page.locator("#build-state", has_text="passed").wait_for()
        assert "step 3/3: done" in log.inner_text()
        assert log.inner_text().count("step 1/3") == 1  # resumed, not replayed

        page.goto(f"{console.url}/images/alice/app/tags/1")
        pull = page.locator("#pull-docker")
        assert pull.inner_text() == f"docker pull {console.registry_host}/alice/app:1"
        assert page.locator("#built-by").inner_text() == f"app #{build.number}"
        assert page.locator(".dockerfile .highlight").count() == 1
        page.click("button[data-copy=pull-docker]")
        page.locator("button[data-copy=pull-docker]", has_text="Cop").wait_for()
    finally:
        context.close()
