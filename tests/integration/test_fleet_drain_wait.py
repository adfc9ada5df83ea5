"""`asterfleet fleet drain ID --wait`: returns when the node is idle, or
says why it stopped waiting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from asterfleet.lab.stack import Stack
from asterfleet.runtime.process import wait_for

pytestmark = pytest.mark.integration


def fleet(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asterfleet", "fleet", *args,
         "--etcd", stack.etcd_endpoint, "--cluster", stack.options.cluster],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def test_drain_wait_returns_when_the_node_has_no_calls_left(stack: Stack) -> None:
    nodes = [stack.add_node(f"ast{i}") for i in (1, 2)]
    for b in nodes:
        stack.wait_routable(b)
    uac = stack.start_calls(rate=10, hold_ms=3000)
    wait_for(lambda: nodes[0].uas.stats().current_calls > 0, 20, what="calls on ast1")

    too_short = fleet(stack, "drain", "ast1", "--wait", "--timeout", "1")
    assert too_short.returncode == 1
    assert "stopped waiting after 1s" in too_short.stderr

    done = fleet(stack, "drain", "ast1", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert "ast1: drained, no calls left" in done.stdout
    assert nodes[0].uas.stats().current_calls == 0
    # Safe to stop, and the listing says so in one word.
    listed = fleet(stack, "ls", "--json")
    states = {n["id"]: n["state"] for n in json.loads(listed.stdout)["nodes"]}
    assert states == {"ast1": "drained", "ast2": "active"}
    assert "drained" in fleet(stack, "ls").stdout
    final = uac.stop_gracefully(30)
    assert final.failed_calls == 0  # calls kept flowing to ast2


def test_drain_wait_on_an_unknown_node_says_so(stack: Stack) -> None:
    result = fleet(stack, "drain", "nobody", "--wait")
    assert result.returncode == 2
    assert "no node 'nobody'" in result.stderr
