"""Bad input is reported clearly and never takes anything down."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import pytest

from asterfleet.etcd_client import Etcd
from asterfleet.fleet.keys import Keyspace
from asterfleet.lab.stack import Stack
from asterfleet.runtime.process import wait_for

pytestmark = pytest.mark.integration


def asterfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asterfleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def balancer_status(stack: Stack) -> dict[str, object]:
    listing = asterfleet(
        "fleet", "balancers", "--json", "--etcd", stack.etcd_endpoint, "--cluster", "t"
    )
    status: dict[str, object] = json.loads(listing.stdout)["balancers"][0]
    return status


def put(endpoint: str, key: str, value: bytes) -> None:
    async def go() -> None:
        async with Etcd(endpoint) as etcd:
            await etcd.put(key, value)

    asyncio.run(go())


def test_a_malformed_record_is_reported_and_skipped(stack: Stack) -> None:
    good = stack.add_node("ast1")
    stack.wait_routable(good)
    ks = Keyspace(stack.options.cluster)
    put(stack.etcd_endpoint, ks.node("evil"), b'{"id": "evil", "sip_uri": 42}')
    put(stack.etcd_endpoint, ks.node("junk"), b"\x00\xff not json")
    assert stack.balancer is not None
    wait_for(
        lambda: (
            "bad_record_skipped" in stack.balancer.log_tail(200)  # type: ignore[union-attr]
            and "nodes/junk" in stack.balancer.log_tail(200)
        ),  # type: ignore[union-attr]
        10,
        what="the balancer to report the bad records",
    )
    # The good node is still routed and takes calls; the balancer lives.
    assert stack.balancer.alive()
    assert [d.attrs["duid"] for d in stack.dispatcher()] == ["ast1"]
    uac = stack.start_calls(rate=10, hold_ms=0, max_calls=10)
    assert uac.wait(30) == 0

    listing = asterfleet("fleet", "ls", "--json", "--etcd", stack.etcd_endpoint, "--cluster", "t")
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    assert [n["id"] for n in data["nodes"]] == ["ast1"]
    assert any("nodes/evil" in p for p in data["problems"])


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["node", "run", "--sip-uri", "not-a-uri"], "not-a-uri"),
        (["node", "run", "--sip-uri", "sip:h:5060", "--etcd", "h:port"], "h:port"),
        (["node", "run", "--sip-uri", "sip:h:5060", "--id", "bad id!"], "bad id!"),
        (["node", "run", "--sip-uri", "sip:h:5060", "--weight", "5000"], "--weight"),
        (["node", "run", "--sip-uri", "sip:h:5060", "--calls", "carrier-pigeon"], "carrier-pigeon"),
        (["balancer", "run", "--list-file", "/nonexistent/d.list", "--rpc", "/x"], "/nonexistent"),
        (
            ["balancer", "run", "--list-file", "/tmp/d.list", "--rpc", "/x", "--algorithm", "dice"],
            "dice",
        ),
        (["fleet", "weight", "ast1", "heavy"], "heavy"),
        (["fleet", "ls", "--etcd", ""], "--etcd"),
        (["kamailio", "config", "--listen", "udp:nowhere"], "udp:nowhere"),
    ],
)
def test_invalid_options_give_one_line_and_exit_2(args: list[str], names: str) -> None:
    result = asterfleet(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert names in lines[0]
    assert "Traceback" not in result.stderr


def test_an_unwritable_list_file_is_reported_and_the_loop_keeps_running(stack: Stack) -> None:
    first = stack.add_node("ast1")
    stack.wait_routable(first)
    # The list file's place is taken by a directory: no write can succeed.
    stack.list_file.unlink()
    stack.list_file.mkdir()
    second = stack.add_node("ast2")
    assert stack.balancer is not None
    wait_for(
        lambda: "cannot write" in stack.balancer.log_tail(100),  # type: ignore[union-attr]
        10,
        what="the write failure reported",
    )
    status = balancer_status(stack)
    assert "cannot write" in str(status["last_error"])
    assert stack.balancer.alive()
    # Kamailio still routes with what it had.
    assert [d.attrs["duid"] for d in stack.dispatcher()] == ["ast1"]

    shutil.rmtree(stack.list_file)  # the operator fixes it
    stack.wait_routable(second, timeout=10)
    wait_for(
        lambda: balancer_status(stack).get("last_error") is None,
        10,
        what="the error cleared in the balancer's status",
    )
