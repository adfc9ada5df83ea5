"""A daemon's metrics listener with --metrics-token-file answers only
Prometheus' bearer token (the balancers' 9102 on a hostNetwork Pod, which
no NetworkPolicy guards). A real listener on loopback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from asterfleet.errors import UsageError
from asterfleet.metrics import TokenFile, read_token_file, serve


def test_the_listener_answers_only_the_scrape_token(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Counter("asterfleet_demo_passes", "Passes", registry=registry).inc()
    (tmp_path / "token").write_text("s3cret-scrape\n")
    port = serve("127.0.0.1:0", registry, TokenFile(tmp_path / "token"))
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape(auth: str | None) -> httpx.Response:
        return httpx.get(url, headers={"Authorization": auth} if auth else {}, timeout=5)

    assert scrape(None).status_code == 401
    assert scrape("Bearer wrong").status_code == 401
    assert scrape("Basic czNjcmV0LXNjcmFwZQ==").status_code == 401
    answered = scrape("Bearer s3cret-scrape")
    assert answered.status_code == 200
    assert "asterfleet_demo_passes_total 1.0" in answered.text


@pytest.mark.parametrize("content", ["", "\n", "one\ntwo\n"])
def test_a_token_file_is_one_line(tmp_path: Path, content: str) -> None:
    (tmp_path / "token").write_text(content)
    with pytest.raises(UsageError, match=r"--metrics-token-file .*one line"):
        read_token_file(tmp_path / "token")


def test_a_missing_token_file_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--metrics-token-file .*cannot read"):
        read_token_file(tmp_path / "absent")


def test_the_readiness_check_sends_the_token(tmp_path: Path) -> None:
    """images/asterfleet/asterfleet-healthcheck, the balancer's readiness
    probe, reads the same token file: a guarded listener still reads Ready."""
    check = Path(__file__).resolve().parents[2] / "images/asterfleet/asterfleet-healthcheck"
    (tmp_path / "token").write_text("s3cret-scrape\n")
    port = serve("127.0.0.1:0", CollectorRegistry(), TokenFile(tmp_path / "token"))
    env = {"PATH": os.environ["PATH"], "ASTERFLEET_METRICS_LISTEN": f"127.0.0.1:{port}"}
    without = subprocess.run(["sh", str(check)], env=env, capture_output=True, timeout=30)
    assert without.returncode != 0  # 401: the probe would fail without the token
    env["ASTERFLEET_METRICS_TOKEN_FILE"] = str(tmp_path / "token")
    done = subprocess.run(["sh", str(check)], env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_a_rotated_token_is_taken_without_a_restart(tmp_path: Path) -> None:
    """A Secret rotated in place (Kubernetes swaps its ``..data`` link): the
    new token is answered at once, the old one no more; an emptied file
    keeps the last good token rather than opening the listener."""
    data = tmp_path / "..data"
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "token").write_text("first-token\n")
    data.symlink_to("v1")
    (tmp_path / "token").symlink_to("..data/token")
    port = serve("127.0.0.1:0", CollectorRegistry(), TokenFile(tmp_path / "token"))
    url = f"http://127.0.0.1:{port}/metrics"

    def status(token: str) -> int:
        auth = {"Authorization": f"Bearer {token}"}
        return httpx.get(url, headers=auth, timeout=5).status_code

    assert (status("first-token"), status("second-token")) == (200, 401)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "token").write_text("second-token\n")
    (tmp_path / "..data_tmp").symlink_to("v2")
    (tmp_path / "..data_tmp").replace(data)  # the atomic swap kubelet does
    assert (status("first-token"), status("second-token")) == (401, 200)
    (tmp_path / "v2" / "token").write_text("")  # a bad rotation
    assert (status("first-token"), status("second-token")) == (401, 200)
