"""`asterfleet balancer run`: the agent beside each Kamailio load balancer."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from asterfleet import logs, metrics
from asterfleet.balancer.agent import BalancerAgent, BalancerConfig, BalancerMetrics
from asterfleet.cli.common import (
    ENV,
    ClusterOpt,
    EtcdOpt,
    LogJsonOpt,
    LogLevelOpt,
    MetricsOpt,
    fail,
    user_errors,
)
from asterfleet.cli.daemon import run_daemon
from asterfleet.cli.node import default_node_id
from asterfleet.etcd_client import parse_endpoints
from asterfleet.fleet.dispatcher_list import Algorithm
from asterfleet.fleet.model import check_node_id

app = typer.Typer(help="The balancer agent, run beside each Kamailio.", no_args_is_help=True)


@app.command("run")
def run(
    etcd: str = EtcdOpt,
    cluster: str = ClusterOpt,
    balancer_id: str = typer.Option(
        None, "--id", envvar=ENV + "BALANCER_ID", help="Balancer id [default: the host name]."
    ),
    list_file: Path = typer.Option(
        ..., envvar=ENV + "LIST_FILE", help="Kamailio's dispatcher.list, rewritten atomically."
    ),
    rpc: str = typer.Option(
        ...,
        envvar=ENV + "RPC",
        help="Kamailio jsonrpcs: a unix datagram socket path, or http://HOST:PORT/RPC.",
    ),
    algorithm: Algorithm = typer.Option(
        Algorithm.WEIGHT,
        envvar=ENV + "ALGORITHM",
        help="Must match the algorithm kamailio.cfg was rendered with.",
    ),
    ttl: int = typer.Option(
        5, envvar=ENV + "TTL", min=2, max=300, help="Lease TTL of this balancer's status record."
    ),
    min_apply_interval: float = typer.Option(
        0.1,
        envvar=ENV + "MIN_APPLY_INTERVAL",
        min=0,
        max=10,
        help="Seconds between two applies: bursts of changes are folded into one reload.",
    ),
    metrics_listen: str = MetricsOpt,
    log_level: str = LogLevelOpt,
    log_json: bool = LogJsonOpt,
) -> None:
    """Keep Kamailio's dispatcher.list equal to the fleet in etcd.

    A level-triggered reconcile loop: every change in etcd wakes it; each
    pass renders the whole list, and only a changed list is written
    (temp file, fsync, rename) and reloaded over JSON-RPC. If etcd goes
    away the last list stays; if Kamailio restarts the list is re-applied.

    Example:

        asterfleet balancer run --etcd 10.0.0.1:2379 --list-file /etc/kamailio/dispatcher.list --rpc /run/kamailio/kamailio_rpc.sock --metrics-listen 127.0.0.1:9102
    """
    with user_errors():
        parse_endpoints(etcd)
        lb_id = balancer_id or default_node_id()
        check_node_id(lb_id)
        directory = list_file.parent if str(list_file.parent) else Path(".")
        if not directory.is_dir():
            fail(f"--list-file {list_file}: directory {directory} does not exist")
        if not os.access(directory, os.W_OK):
            # Reported, not fatal: the loop keeps running and retries.
            typer.echo(
                f"warning: --list-file {list_file}: directory {directory} is not writable", err=True
            )
        logs.configure(log_level, log_json)
        bal_metrics = BalancerMetrics()
        if metrics_listen:
            metrics.serve(metrics_listen, bal_metrics.registry)
        cfg = BalancerConfig(
            etcd=etcd,
            cluster=cluster,
            balancer_id=lb_id,
            list_file=list_file,
            rpc=rpc,
            algorithm=algorithm,
            ttl=ttl,
            min_apply_interval=min_apply_interval,
        )
    agent = BalancerAgent(cfg, bal_metrics)
    raise typer.Exit(run_daemon(agent.run, "balancer"))
