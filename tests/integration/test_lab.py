"""`asterfleet lab`: one command runs the cluster with traffic; scaling
while calls run answers every call; `lab down` leaves nothing behind."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from asterfleet.factory import queue
from asterfleet.factory.db import open_store
from asterfleet.factory.logs import read_log
from asterfleet.lab.factory import SAMPLE_KNOT, SAMPLE_REPOSITORY
from asterfleet.lab.state import LabInfo, pid_alive, read_info
from asterfleet.registry.catalogue import list_tags
from asterfleet.runtime.process import ManagedProcess, wait_for
from asterfleet.testing.chromium import launch as launch_chromium
from asterfleet.testing.chromium import log_in as sign_in

pytestmark = pytest.mark.integration


def lab(lab_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asterfleet", "lab", *args, "--dir", str(lab_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status(lab_dir: Path) -> dict:  # type: ignore[type-arg]
    result = lab(lab_dir, "status", "--json", timeout=30)
    assert result.returncode == 0, result.stderr
    data: dict = json.loads(result.stdout)  # type: ignore[type-arg]
    return data


def every_area_works_in_the_demo(lab_dir: Path) -> None:
    """The sample knot's first build passes and is pushed through the lab's
    registry; every area of the navigation is a console page with content."""
    info = read_info(lab_dir)
    assert info is not None and info.factory_db and info.registry and info.console_url
    engine = open_store(info.factory_db)
    try:
        wait_for(
            lambda: queue.get_build(engine, SAMPLE_KNOT, 1).state in ("passed", "failed"),
            240,
            what="the sample knot's first build",
        )
        build = queue.get_build(engine, SAMPLE_KNOT, 1)
        assert build.state == "passed", read_log(engine, build.id)[0][-3000:]
        assert build.digest and build.image == f"{info.registry}/{SAMPLE_REPOSITORY}@{build.digest}"
        wait_for(lambda: len(list_tags(engine, SAMPLE_REPOSITORY)) >= 2, 30, what="catalogue")
    finally:
        engine.dispose()
    password = Path(info.console_password_file or "").read_text().strip()
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            sign_in(page, f"{info.console_url}/fleet", "admin", password)
            page.wait_for_selector("#node-ast1")
            areas = page.locator("header nav a").evaluate_all("links => links.map(a => a.pathname)")
            assert {"/fleet", "/balancers", "/events", "/calls", "/images", "/knots"} <= set(areas)
            for path in [
                *areas,
                "/knots/new",
                f"/knots/{SAMPLE_KNOT}",
                f"/images/{SAMPLE_REPOSITORY}",
            ]:
                response = page.goto(info.console_url + path)
                assert response.status == 200, (path, response.status)
                assert page.locator("header nav a").count() >= 6, path  # the console's layout
                assert "not configured" not in page.inner_text("main"), path
            page.goto(f"{info.console_url}/images/{SAMPLE_REPOSITORY}")
            assert "latest" in page.inner_text("main")
        finally:
            browser.close()


def etcd_needs_a_certificate(info: LabInfo) -> None:
    """The lab's etcd speaks TLS with client certificates and auth on: the
    operator's etcd.env gets in, a client without a certificate does not."""
    assert info.etcd_env is not None
    env = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in Path(info.etcd_env).read_text().splitlines()
    )
    fleet = [sys.executable, "-m", "asterfleet", "fleet", "ls", "--json"]

    def run(argv: list[str], extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **extra}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

    allowed = run(fleet, env)
    assert allowed.returncode == 0, allowed.stderr
    assert "ast1" in allowed.stdout
    refused = run([*fleet, "--etcd", info.etcd, "--cluster", info.cluster], {})
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1


def test_lab_up_scale_3_5_2_answers_every_call_and_down_leaves_nothing(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    up = ManagedProcess(
        "lab",
        [sys.executable, "-m", "asterfleet", "lab", "up", "--dir", str(lab_dir),
         "--nodes", "3", "--calls-per-second", "10", "--hold", "1"],
        tmp_path / "lab-up.log",
    ).start()  # fmt: skip
    try:
        wait_for(lambda: "asterfleet lab is up" in up.log_tail(50), 240, what="lab up")
        log = up.log_tail(50)
        assert "SIP address to call" in log and "console login" in log
        info = read_info(lab_dir)
        assert info is not None and info.console_url
        wait_for(lambda: status(lab_dir)["calls"].get("successful", 0) >= 20, 30, what="calls")
        first = status(lab_dir)
        assert sorted(n["id"] for n in first["nodes"]) == ["ast1", "ast2", "ast3"]
        etcd_needs_a_certificate(info)

        for n in (5, 2):
            result = lab(lab_dir, "scale", str(n))
            assert result.returncode == 0, result.stderr
            snap = status(lab_dir)
            assert len([x for x in snap["nodes"] if x["state"] == "active"]) == n
            answered = snap["calls"]["successful"]
            wait_for(
                lambda a=answered: status(lab_dir)["calls"]["successful"] >= a + 20,  # type: ignore[misc]
                30,
                what=f"calls answered with {n} nodes",
            )
        routed = {n["id"]: n["calls_routed"] for n in status(lab_dir)["nodes"]}
        assert sorted(routed) == ["ast1", "ast2"] and all(v > 0 for v in routed.values())
        failed = status(lab_dir)["calls"]["failed"]
        if failed:
            errors = lab_dir / "run" / "callers" / "calls_errors.log"
            agents = sorted((lab_dir / "run" / "nodes").glob("*/agent.log"))
            detail = [errors.read_text(errors="replace")[-3000:] if errors.exists() else ""]
            detail += [f"{a}: {a.read_text()[-1500:]}" for a in agents]
            raise AssertionError(f"{failed} calls failed:\n" + "\n".join(detail))

        every_area_works_in_the_demo(lab_dir)

        pids = read_info(lab_dir).pids  # type: ignore[union-attr]
        assert {"docker-registry", "factory-worker"} <= set(pids)
        assert len(pids) >= 9  # etcd, kamailio, balancer, console, calls, 2 x (agent + uas)
        down = lab(lab_dir, "down")
        assert down.returncode == 0, down.stderr
        assert "killed leftover" not in down.stdout
        assert not up.alive()
        assert [name for name, pid in pids.items() if pid_alive(pid)] == []
        final = json.loads((lab_dir / "last-run.json").read_text())["calls"]
        assert final["failed"] == 0 and final["successful"] >= 100
    finally:
        up.stop(grace=60)
        info = read_info(lab_dir)
        if info is not None:
            for pid in info.pids.values():
                if pid_alive(pid):
                    os.killpg(pid, 9)


def test_lab_status_without_a_lab_says_how_to_start_one(tmp_path: Path) -> None:
    result = lab(tmp_path / "none", "status")
    assert result.returncode == 2
    assert "asterfleet lab up" in result.stderr
