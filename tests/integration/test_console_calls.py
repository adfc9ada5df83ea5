"""The Calls area with real programs: tshark reads the PCAP the console
serves, and an operator in headless Chromium finds a call, opens its ladder
and clicks an arrow to read the whole message."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from asterfleet.console.process import start_console
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import require_binary
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in
from tests.unit.test_console_calls import (  # noqa: F401  (capture_db is a fixture)
    capture_db,
    make_client,
)
from tests.unit.test_console_web import login

pytestmark = pytest.mark.integration

PASSWORD = "calls-admin-pass"


def test_the_downloaded_pcap_opens_in_tshark(tmp_path: Path, capture_db: str) -> None:  # noqa: F811
    tshark = require_binary("tshark")
    with make_client(tmp_path, capture_db) as client:
        login(client)
        r = client.get("/calls/c0@x/pcap")
    assert r.status_code == 200
    pcap = tmp_path / "call.pcap"
    pcap.write_bytes(r.content)
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-Y", "sip", "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
         "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.Call-ID"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "HOME": str(tmp_path)},
    ).stdout  # fmt: skip
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert [f[2] or f[3] for f in lines] == ["INVITE", "INVITE", "200", "200", "ACK", "BYE", "200"]
    assert lines[0][:2] == ["10.0.0.1", "10.0.0.2"]
    assert {f[4] for f in lines} == {"c0@x"}


@pytest.fixture
def console_url(tmp_path: Path, capture_db: str) -> Iterator[str]:  # noqa: F811
    """A real `asterfleet console` reading the capture database (no etcd needed)."""
    running = start_console(
        tmp_path / "console.log",
        etcd=f"127.0.0.1:{free_port()}",
        db=str(tmp_path / "console.db"),
        extra_args=["--capture-db", capture_db],
        env={"ASTERFLEET_ADMIN_PASSWORD": PASSWORD},
        timeout=120,  # start-up (argon2, imports) is slow on a busy shared machine
    )
    try:
        yield running.url
    finally:
        running.stop()


def test_an_operator_finds_a_call_and_reads_a_message_of_its_ladder(console_url: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page()
            sign_in(page, f"{console_url}/calls", "admin", PASSWORD)
            page.wait_for_url("**/calls")
            page.fill("#call-search input[name=from_user]", "alex")
            page.click("#call-search button[type=submit]")
            rows = page.locator("#calls-table tbody tr")
            sync_api.expect(rows).to_have_count(1)
            sync_api.expect(rows.first).to_contain_text("486")
            rows.first.locator("td.callid a").click()
            page.wait_for_url("**/calls/c1%40x")
            arrows = page.locator("svg.ladder g.msg")
            sync_api.expect(arrows).to_have_count(4)
            sync_api.expect(page.locator("svg.ladder text.host")).to_have_count(3)
            arrows.nth(2).click()  # the backend's 486 to the balancer
            text = page.locator("#message-text")
            sync_api.expect(text).to_contain_text("SIP/2.0 486 Busy Here")
            sync_api.expect(text).to_contain_text("Call-ID: c1@x")
            sync_api.expect(text).to_contain_text("Via: SIP/2.0/UDP 10.0.0.4:5060")
            sync_api.expect(page.locator("svg.ladder g.msg.selected")).to_have_count(1)
        finally:
            browser.close()
