"""`asterfleet fleet ...`: see and steer the fleet."""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

from asterfleet.cli.common import (
    ENV,
    ClusterOpt,
    EtcdOpt,
    JsonOption,
    console,
    emit,
    etcd_options,
    etcd_security,
    fail,
    print_table,
    user_errors,
)
from asterfleet.errors import EtcdUnavailable
from asterfleet.etcd_client import Etcd, parse_endpoints
from asterfleet.fleet import actions
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import NO_CALL_COUNTER, AdminIntent, EffectiveState
from asterfleet.fleet.view import FleetView

app = typer.Typer(
    help="See and steer the fleet: list nodes, drain and undrain them, change weights.",
    no_args_is_help=True,
)
T = TypeVar("T")

ByOpt = typer.Option(
    None, "--by", envvar=ENV + "OPERATOR", help="Who is acting [default: LOGIN@cli]."
)
NoteOpt = typer.Option(None, "--note", help="Why, for the record (shown in the console).")

STATE_STYLE = {
    "active": "green",
    "starting": "cyan",
    "draining": "yellow",
    "drained": "blue",
    "maintenance": "magenta",
    "unhealthy": "red",
}


def _operator(by: str | None) -> str:
    """Who signs the intent (and so the event): --by, else LOGIN@cli."""
    if by:
        return by
    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "unknown@cli"


def _with_etcd(endpoints: str, fn: Callable[[Etcd], Awaitable[T]]) -> T:
    parse_endpoints(endpoints)
    security = etcd_security()

    async def go() -> T:
        async with Etcd(endpoints, security=security) as etcd:
            return await fn(etcd)

    return asyncio.run(go())


def _read_fleet(etcd: str, cluster: str) -> FleetView:
    return _with_etcd(etcd, lambda e: actions.read_fleet(e, Keyspace(cluster)))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _state(value: str) -> str:
    return f"[{STATE_STYLE.get(value, 'white')}]{value}[/]"


def _print_nodes(view: FleetView) -> None:
    rows = []
    for n in view.nodes:
        d = n.as_dict()
        rows.append(
            [
                d["id"],
                d["set"],
                d["sip_uri"],
                _state(d["state"]),
                d["agent_state"],
                d["operator"],
                d["weight"],
                "-" if d["active_calls"] is None else d["active_calls"],
                d["asterisk_version"] or d["version"] or "-",
                _age(d["age_seconds"]),
            ]
        )
    print_table(
        f"cluster nodes (etcd revision {view.revision})",
        ["ID", "SET", "URI", "STATE", "AGENT", "OPERATOR", "WEIGHT", "CALLS", "VERSION", "AGE"],
        rows,
    )
    for problem in view.problems:
        console.print(f"[yellow]warning:[/] {problem}", highlight=False)
    if not view.nodes:
        console.print("no nodes registered: start one with 'asterfleet node run'")


def _fleet_json(view: FleetView) -> dict[str, Any]:
    return {
        "revision": view.revision,
        "nodes": [n.as_dict() for n in view.nodes],
        "problems": view.problems,
    }


@app.command("ls")
@etcd_options
def ls(etcd: str = EtcdOpt, cluster: str = ClusterOpt, as_json: bool = JsonOption) -> None:
    """List every node: set, URI, effective state, operator intent, weight, calls."""
    with user_errors():
        view = _read_fleet(etcd, cluster)
    emit(as_json, _fleet_json(view), lambda: _print_nodes(view))


@app.command("show")
@etcd_options
def show(
    node_id: str = typer.Argument(..., metavar="ID", help="The node id."),
    etcd: str = EtcdOpt,
    cluster: str = ClusterOpt,
    as_json: bool = JsonOption,
) -> None:
    """Everything known about one node."""
    with user_errors():
        view = _read_fleet(etcd, cluster)
    node = view.node(node_id)
    if node is None:
        intent = view.orphan_intents.get(node_id)
        if intent is None:
            fail(f"no node {node_id!r} in cluster {cluster!r}: see 'asterfleet fleet ls'", 1)
        fail(f"node {node_id!r} is not registered (operator intent kept: {intent.model_dump()})", 1)
    data = node.as_dict()

    def render() -> None:
        for key in sorted(data):
            console.print(f"[bold]{key:>14}[/]  {data[key]}", highlight=False)

    emit(as_json, data, render)


def _print_intent(node_id: str, intent: AdminIntent, as_json: bool) -> None:
    emit(
        as_json,
        {"id": node_id, "intent": intent.model_dump()},
        lambda: console.print(
            f"{node_id}: drain={intent.drain} weight={intent.weight} by={intent.by}",
            highlight=False,
        ),
    )


# A node agent refreshes its call count about once a second, and the count
# it last wrote may predate calls that just started: "drained" is believed
# only once it has held for longer than that.
DRAINED_SETTLE_S = 2.0


def _wait_drained(etcd: str, cluster: str, node_id: str, timeout: float) -> None:
    """Wait until the node is ``drained`` (or has left the fleet)."""
    deadline = time.monotonic() + timeout
    last_calls: int | None = None
    last_reason: str | None = None
    drained_since: float | None = None
    while time.monotonic() < deadline:
        try:
            view = _read_fleet(etcd, cluster)
        except EtcdUnavailable as exc:
            console.print(f"[yellow]etcd unavailable, retrying:[/] {exc}", highlight=False)
            time.sleep(1)
            continue
        node = view.node(node_id)
        if node is None:
            console.print(f"{node_id}: left the fleet")
            return
        calls = node.record.active_calls
        if calls is None:
            reason = node.record.calls_error or NO_CALL_COUNTER
            if reason == NO_CALL_COUNTER:
                fail(
                    f"node {node_id!r}: call count unavailable: {reason}: cannot tell when it is idle",
                    1,
                )
            if reason != last_reason:
                console.print(f"{node_id}: call count unavailable: {reason}", highlight=False)
                last_reason = reason
            time.sleep(0.5)
            continue
        last_reason = None
        if node.state is EffectiveState.DRAINED:
            now = time.monotonic()
            drained_since = now if drained_since is None else drained_since
            if now - drained_since >= DRAINED_SETTLE_S:
                console.print(f"{node_id}: drained, no calls left")
                return
            time.sleep(0.25)
            continue
        drained_since = None
        if node.intent is None or not node.intent.drain:
            fail(f"node {node_id!r} was undrained while waiting: stopped waiting", 1)
        if calls == 0:  # idle in a stricter state than draining (unhealthy, maintenance)
            console.print(f"{node_id}: {node.state.value}, no calls left")
            return
        if calls != last_calls:
            console.print(f"{node_id}: {calls} call(s) left")
            last_calls = calls
        time.sleep(0.5)
    fail(
        f"stopped waiting after {timeout:.0f}s: node {node_id!r} still has {last_calls} call(s)", 1
    )


@app.command("drain")
@etcd_options
def drain(
    node_id: str = typer.Argument(..., metavar="ID", help="The node id."),
    wait: bool = typer.Option(False, "--wait", help="Return only when the node has no calls left."),
    timeout: float = typer.Option(
        3600, "--timeout", min=0, help="With --wait: give up after this many seconds."
    ),
    etcd: str = EtcdOpt,
    cluster: str = ClusterOpt,
    by: str = ByOpt,
    note: str = NoteOpt,
    as_json: bool = JsonOption,
) -> None:
    """Send no new calls to a node; calls in progress continue.

    The intent is stored apart from the node record, so it survives agent
    restarts until 'asterfleet fleet undrain'.
    """
    with user_errors():
        intent = _with_etcd(
            etcd, lambda e: actions.drain(e, Keyspace(cluster), node_id, _operator(by), note)
        )
        _print_intent(node_id, intent, as_json)
        if wait:
            _wait_drained(etcd, cluster, node_id, timeout)


@app.command("undrain")
@etcd_options
def undrain(
    node_id: str = typer.Argument(..., metavar="ID", help="The node id."),
    etcd: str = EtcdOpt,
    cluster: str = ClusterOpt,
    by: str = ByOpt,
    note: str = NoteOpt,
    as_json: bool = JsonOption,
) -> None:
    """Let a drained node take new calls again."""
    with user_errors():
        intent = _with_etcd(
            etcd, lambda e: actions.undrain(e, Keyspace(cluster), node_id, _operator(by), note)
        )
    _print_intent(node_id, intent, as_json)


@app.command("weight")
@etcd_options
def weight(
    node_id: str = typer.Argument(..., metavar="ID", help="The node id."),
    value: str = typer.Argument(
        ..., metavar="N", help="Relative weight 0-1000, or 'reset' for the agent's own."
    ),
    etcd: str = EtcdOpt,
    cluster: str = ClusterOpt,
    by: str = ByOpt,
    note: str = NoteOpt,
    as_json: bool = JsonOption,
) -> None:
    """Override a node's weight (relative: 1:2:1 gives 25/50/25 percent)."""
    with user_errors():
        if value == "reset":
            new: int | None = None
        elif value.isdigit():
            new = int(value)
        else:
            fail(f"weight {value!r} is not a whole number from 0 to 1000, or 'reset'")
        intent = _with_etcd(
            etcd,
            lambda e: actions.set_weight(e, Keyspace(cluster), node_id, new, _operator(by), note),
        )
    _print_intent(node_id, intent, as_json)


@app.command("balancers")
@etcd_options
def balancers(etcd: str = EtcdOpt, cluster: str = ClusterOpt, as_json: bool = JsonOption) -> None:
    """Each balancer's applied state, and whether they all agree."""
    with user_errors():
        view = _read_fleet(etcd, cluster)
    data = {
        "agree": view.balancers_agree(),
        "balancers": [b.model_dump() for b in view.balancers],
    }

    def render() -> None:
        print_table(
            "balancers",
            ["ID", "REVISION", "LIST HASH", "NODES", "ROUTABLE", "RELOAD", "ERROR"],
            [
                [
                    b.id,
                    b.revision,
                    b.list_hash,
                    b.nodes,
                    b.routable,
                    "ok" if b.last_reload_ok else "[red]failed[/]",
                    b.last_error or "-",
                ]
                for b in view.balancers
            ],
        )
        if not view.balancers:
            console.print("no balancer is running: start one with 'asterfleet balancer run'")
        elif view.balancers_agree():
            console.print("[green]all balancers agree[/]")
        else:
            console.print("[yellow]balancers disagree: some have not applied the latest list[/]")

    emit(as_json, data, render)
