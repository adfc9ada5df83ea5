"""`asterfleet balancer run`: the agent beside each Kamailio load balancer."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from asterfleet.cli.common import (
    ENV,
    ClusterOpt,
    EtcdOpt,
    LogJsonOpt,
    LogLevelOpt,
    MetricsOpt,
    MetricsTokenOpt,
    default_node_id,
    etcd_options,
    etcd_security,
    fail,
    rpc_target,
    user_errors,
)
from asterfleet.fleet.dispatcher_list import Algorithm

app = typer.Typer(help="The balancer agent, run beside each Kamailio.", no_args_is_help=True)


@app.command("run")
@etcd_options
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
        parser=rpc_target,
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
    kamailio_reconcile_interval: float = typer.Option(
        2.0,
        envvar=ENV + "KAMAILIO_RECONCILE_INTERVAL",
        min=0,
        max=300,
        help="Seconds between checks of Kamailio's in-memory dispatcher state against the list "
        "(also after each apply); drift such as a drained box turned active is corrected. 0: off.",
    ),
    capture_id: int | None = typer.Option(
        None,
        "--capture-id",
        envvar=ENV + "BALANCER_CAPTURE_ID",
        min=0,
        max=2**32 - 1,
        help="HEP capture id this Kamailio sends captured SIP with (its kamailio.cfg "
        "capture_id); published in the balancer's record so the console names this balancer "
        "on call ladders.",
    ),
    sip_address: list[str] = typer.Option(
        [],
        "--sip-address",
        envvar=ENV + "BALANCER_SIP_ADDRESS",
        help="Address this Kamailio sends SIP to the boxes from (repeat for several); published "
        "in the balancer's record so 'asterfleet asterisk config --etcd' identifies it. "
        "Default: the IP addresses of ASTERFLEET_SIP_LISTEN (Kamailio's listen sockets), if set.",
    ),
    vip: str = typer.Option(
        None,
        "--vip",
        envvar=ENV + "VIP",
        help="The virtual IP the balancers share (10.0.0.100 or 10.0.0.100/24): export "
        "whether this host holds it (asterfleet_balancer_vip_held; alert when the sum over "
        "the balancers is not 1).",
    ),
    metrics_listen: str = MetricsOpt,
    metrics_token_file: Path = MetricsTokenOpt,
    log_level: str = LogLevelOpt,
    log_json: bool = LogJsonOpt,
) -> None:
    """Keep Kamailio's dispatcher.list equal to the fleet in etcd.

    A level-triggered reconcile loop: every change in etcd wakes it; each
    pass renders the whole list, and only a changed list is written
    (temp file, fsync, rename) and reloaded over JSON-RPC. Kamailio's
    in-memory state is read back (dispatcher.list) and drift is corrected,
    so a drained box stays drained whatever the failure route did. If etcd goes
    away the last list stays; if Kamailio restarts the list is re-applied.

    Example:

        asterfleet balancer run --etcd 10.0.0.1:2379 --list-file /etc/kamailio/dispatcher.list --rpc /run/kamailio/kamailio_rpc.sock --metrics-listen 127.0.0.1:9102
    """
    # Imported here, not at the top: `asterfleet --help` and the other
    # commands do not pay for the agent, etcd, Prometheus or Kamailio's RPC.
    from asterfleet import logs, metrics
    from asterfleet.balancer.agent import BalancerAgent, BalancerConfig, BalancerMetrics
    from asterfleet.cli.daemon import run_daemon
    from asterfleet.etcd_client import parse_endpoints
    from asterfleet.fleet.model import check_node_id

    with user_errors():
        parse_endpoints(etcd)
        lb_id = balancer_id or default_node_id()
        check_node_id(lb_id)
        sip_addresses = tuple(a for item in sip_address for a in item.split(",") if a)
        if not sip_addresses and os.environ.get(ENV + "SIP_LISTEN"):
            from asterfleet.kamailio.config import listen_addresses

            sip_addresses = listen_addresses(os.environ[ENV + "SIP_LISTEN"])
        for address in sip_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                fail(f"--sip-address {address!r} is not an IP address: give Kamailio's SIP address")
        directory = list_file.parent if str(list_file.parent) else Path(".")
        if not directory.is_dir():
            fail(f"--list-file {list_file}: directory {directory} does not exist")
        if not os.access(directory, os.W_OK):
            # Reported, not fatal: the loop keeps running and retries.
            typer.echo(
                f"warning: --list-file {list_file}: directory {directory} is not writable", err=True
            )
        vip_address = None
        if vip:
            from asterfleet.vip.holder import parse_vip

            vip_address = parse_vip(vip)
        logs.configure(log_level, log_json)
        bal_metrics = BalancerMetrics()
        token = metrics.TokenFile(metrics_token_file) if metrics_token_file else None
        if metrics_listen:
            metrics.serve(metrics_listen, bal_metrics.registry, token)
        cfg = BalancerConfig(
            etcd=etcd,
            etcd_security=etcd_security(),
            cluster=cluster,
            balancer_id=lb_id,
            list_file=list_file,
            rpc=rpc,
            algorithm=algorithm,
            capture_id=capture_id,
            ttl=ttl,
            min_apply_interval=min_apply_interval,
            kamailio_reconcile_interval=kamailio_reconcile_interval,
            sip_addresses=sip_addresses,
            vip=vip_address,
        )
    agent = BalancerAgent(cfg, bal_metrics)
    raise typer.Exit(run_daemon(agent.run, "balancer"))
