"""The podman overlay's probes for the box that stands in for Asterisk, run
in the real testbox image: alive while SIPp answers, not alive once it hangs.

`podman kube play` turns a liveness probe into a podman health check, which
runs only under systemd, so the cluster test never runs it by itself; this
test runs the overlay's command the way the kubelet would. The container has
no network but loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from asterfleet.runtime.process import wait_for
from asterfleet.ship import kube
from asterfleet.ship.podman import Podman
from tests.integration.podman_cluster import ensure_images, render_overlay

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAME = "hardening-testbox-probes"


@pytest.fixture
def box() -> Iterator[tuple[Podman, dict[str, Any]]]:
    ensure_images()
    spec = kube.find(render_overlay(), "StatefulSet", "asterisk")["spec"]["template"]["spec"]
    (asterisk,) = [c for c in spec["containers"] if c["name"] == "asterisk"]
    podman = Podman.from_env()
    podman.prepare()
    podman.run("rm", "-f", "-t", "0", NAME, check=False)
    podman.run(
        "run", "-d", "--name", NAME, "--network", "none", "-e", "POD_IP=127.0.0.1",
        asterisk["image"], *asterisk["args"],
    )  # fmt: skip
    try:
        yield podman, asterisk
    finally:
        podman.run("rm", "-f", "-t", "0", NAME, check=False)


def test_the_overlay_probes_find_a_live_box_and_a_hung_one(
    box: tuple[Podman, dict[str, Any]],
) -> None:
    podman, asterisk = box

    def probe(kind: str) -> int:
        command = asterisk[kind]["exec"]["command"]
        return podman.run("exec", NAME, *command, check=False).returncode

    # SIPp starts: the startup probe passes, then the liveness probe.
    wait_for(lambda: probe("startupProbe") == 0, 30, interval=0.5, what="the startup probe")
    assert probe("livenessProbe") == 0
    # A hung box (SIPp stopped, not gone) fails the liveness probe.
    podman.run("exec", NAME, "sh", "-c", "kill -STOP $(pidof sipp)")
    assert probe("livenessProbe") != 0
