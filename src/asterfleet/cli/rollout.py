"""`asterfleet rollout ...`: roll a new version over the fleet, one drained
node at a time, without dropping a call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from asterfleet.cli.common import (
    ENV,
    ClusterOpt,
    EtcdOpt,
    JsonOption,
    LogJsonOpt,
    LogLevelOpt,
    MetricsOpt,
    console,
    emit,
    etcd_options,
    etcd_security,
    fail,
    print_table,
    user_errors,
)

if TYPE_CHECKING:
    from asterfleet.etcd_client import Etcd
    from asterfleet.rollout.model import Rollout

app = typer.Typer(
    help=(
        "Roll a new Asterisk version or image over a cluster, one node at a time: "
        "drain, wait until idle, replace the box, gate it with test calls, undrain.\n\n"
        "'asterfleet rollout run' is the controller that does it; the other commands "
        "steer it through etcd."
    ),
    no_args_is_help=True,
)
T = TypeVar("T")

ByOpt = typer.Option(
    None, "--by", envvar=ENV + "OPERATOR", help="Who is acting [default: your login name]."
)
IdArg = typer.Argument(
    None, metavar="[ID]", help="The rollout [default: the unfinished one, else the latest]."
)


def _by(by: str | None) -> str:
    import getpass

    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _with_etcd(endpoints: str, fn: Callable[[Etcd], Awaitable[T]]) -> T:
    from asterfleet.etcd_client import Etcd, parse_endpoints

    parse_endpoints(endpoints)

    async def go() -> T:
        async with Etcd(endpoints, security=etcd_security()) as etcd:
            return await fn(etcd)

    return asyncio.run(go())


def _summary(r: Rollout) -> dict[str, Any]:
    data: dict[str, Any] = r.model_dump(mode="json")
    data["counts"] = r.counts()
    data["target_text"] = r.target.describe()
    return data


def _print(r: Rollout) -> None:
    style = {"running": "cyan", "paused": "yellow", "succeeded": "green"}.get(r.state.value, "red")
    target = r.target.describe() or "each node's previous version"
    console.print(
        f"rollout [bold]{r.id}[/] of cluster {r.cluster} to {target}: "
        f"[{style}]{r.state.value}[/]" + (f" — {r.reason}" if r.reason else ""),
        highlight=False,
    )
    now = time.time()
    print_table(
        None,
        ["NODE", "PHASE", "TARGET", "PREVIOUS", "FOR", "NOTE"],
        [
            [
                n.id,
                n.phase.value,
                n.target.describe(),
                n.previous.describe() or "-",
                f"{now - n.since:.0f}s" if n.since else "-",
                n.message or (f"gate: {n.gate}" if n.gate else ""),
            ]
            for n in r.nodes
        ],
    )


@app.command("start")
@etcd_options
def start(
    cluster: str = ClusterOpt,
    etcd: str = EtcdOpt,
    image: str = typer.Option(
        None, "--image", help="Target image reference (compared with the nodes' 'image' label)."
    ),
    version: str = typer.Option(
        None, "--version", help="Target Asterisk version (compared with the nodes' version)."
    ),
    max_unavailable: int = typer.Option(
        1, "--max-unavailable", min=1, max=100, help="Nodes out of service at once."
    ),
    gate_calls: int = typer.Option(
        0,
        "--gate-calls",
        min=0,
        max=1000,
        help="Test calls through each load balancer a replaced node must answer, all of them.",
    ),
    pause_after: int = typer.Option(
        None, "--pause-after", min=1, help="Pause after this many nodes (a canary)."
    ),
    drain_timeout: float = typer.Option(
        300, "--drain-timeout", min=1, help="Replace a node anyway after this many seconds."
    ),
    replace_timeout: float = typer.Option(
        180,
        "--replace-timeout",
        min=1,
        help="Roll a node back when it is not back at the target within this many seconds.",
    ),
    by: str = ByOpt,
    as_json: bool = JsonOption,
) -> None:
    """Start rolling the cluster to a new image or version.

    The rollout is stored in etcd (/asterfleet/CLUSTER/rollouts/ID); the
    controller ('asterfleet rollout run') carries it out, and a restarted
    controller resumes where it was. Example:

        asterfleet rollout start --cluster lab --version 22.1.0 --gate-calls 5 --pause-after 1
    """
    with user_errors():
        from asterfleet.fleet.keys import Keyspace
        from asterfleet.rollout.model import Target, new_rollout_id
        from asterfleet.rollout.operations import plan_rollout, start_rollout

        target = Target(version=version, image=image)
        who, now = _by(by), time.time()

        def plan(node_ids: list[str]) -> Rollout:
            return plan_rollout(
                new_rollout_id(now), cluster, target, node_ids, who, now,
                max_unavailable=max_unavailable, gate_calls=gate_calls,
                pause_after=pause_after, drain_timeout=drain_timeout,
                replace_timeout=replace_timeout,
            )  # fmt: skip

        if image is None and version is None:
            fail("say what to roll out: --image REF or --version V")
        r = _with_etcd(etcd, lambda e: start_rollout(e, Keyspace(cluster), plan))
    emit(as_json, _summary(r), lambda: _print(r))


@app.command("status")
@etcd_options
def status(
    rollout_id: str = IdArg,
    cluster: str = ClusterOpt,
    etcd: str = EtcdOpt,
    show_all: bool = typer.Option(False, "--all", help="List every rollout of the cluster."),
    as_json: bool = JsonOption,
) -> None:
    """Where a rollout is: its state, why, and each node's phase."""
    with user_errors():
        from asterfleet.fleet.keys import Keyspace
        from asterfleet.rollout.operations import get_rollout, list_rollouts

        ks = Keyspace(cluster)
        if show_all:
            rollouts, problems = _with_etcd(etcd, lambda e: list_rollouts(e, ks))
            data = {"rollouts": [_summary(r) for r in rollouts], "problems": problems}

            def render() -> None:
                print_table(
                    f"rollouts of cluster {cluster}",
                    ["ID", "STATE", "TARGET", "NODES", "BY", "REASON"],
                    [
                        [r.id, r.state.value, r.target.describe(), len(r.nodes), r.created_by,
                         r.reason]
                        for r in rollouts
                    ],
                )  # fmt: skip
                for p in problems:
                    console.print(f"[yellow]warning:[/] {p}", highlight=False)

            emit(as_json, data, render)
            return
        r = _with_etcd(etcd, lambda e: get_rollout(e, ks, rollout_id))
    emit(as_json, _summary(r), lambda: _print(r))


def _change(verb: str, rollout_id: str | None, cluster: str, etcd: str, by: str | None) -> None:
    with user_errors():
        from asterfleet.fleet.keys import Keyspace
        from asterfleet.rollout.operations import change_rollout

        r = _with_etcd(
            etcd, lambda e: change_rollout(e, Keyspace(cluster), rollout_id, verb, _by(by))
        )
    console.print(f"rollout {r.id}: {r.state.value}" + (f" ({r.reason})" if r.reason else ""))


@app.command("pause")
@etcd_options
def pause(
    rollout_id: str = IdArg, cluster: str = ClusterOpt, etcd: str = EtcdOpt, by: str = ByOpt
) -> None:
    """Take no new step; a node being replaced stays where it is."""
    _change("pause", rollout_id, cluster, etcd, by)


@app.command("resume")
@etcd_options
def resume(
    rollout_id: str = IdArg, cluster: str = ClusterOpt, etcd: str = EtcdOpt, by: str = ByOpt
) -> None:
    """Go on with a paused rollout."""
    _change("resume", rollout_id, cluster, etcd, by)


@app.command("abort")
@etcd_options
def abort(
    rollout_id: str = IdArg, cluster: str = ClusterOpt, etcd: str = EtcdOpt, by: str = ByOpt
) -> None:
    """Stop for good: a node still draining gets its calls back; a node being
    replaced is left drained for you to check ('asterfleet fleet undrain')."""
    _change("abort", rollout_id, cluster, etcd, by)


@app.command("undo")
@etcd_options
def undo(
    rollout_id: str = IdArg,
    cluster: str = ClusterOpt,
    etcd: str = EtcdOpt,
    by: str = ByOpt,
    as_json: bool = JsonOption,
) -> None:
    """Start a rollout that puts back what each node ran before a finished rollout."""
    with user_errors():
        from asterfleet.fleet.keys import Keyspace
        from asterfleet.rollout.operations import undo_rollout

        r = _with_etcd(etcd, lambda e: undo_rollout(e, Keyspace(cluster), rollout_id, _by(by)))
    emit(as_json, _summary(r), lambda: _print(r))


@app.command("run")
@etcd_options
def run(
    cluster: str = ClusterOpt,
    etcd: str = EtcdOpt,
    replace: str = typer.Option(
        None,
        "--replace",
        envvar=ENV + "REPLACE",
        help=(
            "How a box is replaced when its node has no 'replace' label: command:ARGV "
            "({node} {version} {image} filled in), systemd:UNIT, or "
            "kubernetes:NAMESPACE/STATEFULSET/CONTAINER."
        ),
    ),
    gate_via: str = typer.Option(
        None,
        "--gate-via",
        envvar=ENV + "GATE_VIA",
        help="The load balancers' SIP addresses for the gate calls, host:port,...",
    ),
    interval: float = typer.Option(
        0.5, "--interval", min=0.05, max=60, help="Seconds between two reconcile passes."
    ),
    kube_api: str = typer.Option(
        "https://kubernetes.default.svc", "--kube-api", envvar=ENV + "KUBE_API"
    ),
    kube_token_file: Path = typer.Option(
        Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        "--kube-token-file",
        envvar=ENV + "KUBE_TOKEN_FILE",
        help="Bearer token for the Kubernetes API (read from a file, never from argv).",
    ),
    metrics_listen: str = MetricsOpt,
    log_level: str = LogLevelOpt,
    log_json: bool = LogJsonOpt,
) -> None:
    """The rollout controller: carries out the cluster's rollouts.

    Level-triggered like the balancer: every pass reads the cluster and takes
    the next safe step, so it can be stopped and restarted at any time. Run
    one per cluster. Example:

        asterfleet rollout run --cluster lab --gate-via 127.0.0.1:5060 --replace 'command:/usr/local/bin/replace-box {node} {image}'
    """
    with user_errors():
        from asterfleet import logs, metrics
        from asterfleet.cli.daemon import run_daemon
        from asterfleet.etcd_client import Etcd, parse_endpoints
        from asterfleet.kamailio.config import parse_socket
        from asterfleet.rollout.controller import (
            ControllerConfig,
            RolloutController,
            RolloutMetrics,
        )
        from asterfleet.rollout.gate import GateCalls
        from asterfleet.rollout.replace import KubeApi, parse_replace

        parse_endpoints(etcd)
        action = parse_replace(replace) if replace else None
        balancers = []
        for item in (gate_via or "").split(","):
            if item.strip():
                _, host, port = parse_socket(f"udp:{item.strip()}", "--gate-via")
                balancers.append((host, port))
        logs.configure(log_level, log_json)
        rollout_metrics = RolloutMetrics()
        if metrics_listen:
            metrics.serve(metrics_listen, rollout_metrics.registry)
        cfg = ControllerConfig(
            cluster=cluster,
            replace=action,
            gate=GateCalls(tuple(balancers)),
            kube=KubeApi(url=kube_api, token_file=kube_token_file),
            interval=interval,
        )

    async def main(shutdown: asyncio.Event) -> int:
        async with Etcd(etcd, security=etcd_security()) as client:
            return await RolloutController(client, cfg, rollout_metrics).run(shutdown)

    raise typer.Exit(run_daemon(main, "rollout"))
