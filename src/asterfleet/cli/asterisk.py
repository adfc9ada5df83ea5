"""`asterfleet asterisk`: configuration Asterisk needs to join the fleet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from asterfleet.capture.hepconf import UUID_TYPES, HepConf, render_hep_conf
from asterfleet.cli.common import (
    ENV,
    ClusterOpt,
    LogJsonOpt,
    LogLevelOpt,
    PortOpt,
    etcd_options,
    etcd_security,
    host_port,
    user_errors,
)
from asterfleet.errors import UsageError

if TYPE_CHECKING:
    from asterfleet.asterisk.boxconf import BoxConfig

app = typer.Typer(
    help="Render configuration files for the Asterisk boxes of the fleet.",
    no_args_is_help=True,
)


@app.command("hep-conf")
def hep_conf(
    capture: str = typer.Option(
        ...,
        "--capture",
        envvar="ASTERFLEET_CAPTURE_ADDRESS",
        help="HOST:PORT of the asterfleet capture server (UDP: res_hep sends only UDP).",
    ),
    node: str | None = typer.Option(
        None, "--node", help="Node name, sent as capture_name (Asterisk 18.16/20.1+)."
    ),
    capture_id: int = typer.Option(0, "--capture-id", help="Numeric capture agent id."),
    auth_key: str | None = typer.Option(
        None, "--auth-key", envvar="ASTERFLEET_CAPTURE_AUTH_KEY", help="The server's --auth-key."
    ),
    uuid_type: str = typer.Option(
        "call-id",
        "--uuid-type",
        help=f"Correlation id: one of {', '.join(UUID_TYPES)} (call-id joins RTCP to its call).",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write here (e.g. /etc/asterisk/hep.conf) instead of stdout."
    ),
) -> None:
    """Render Asterisk's hep.conf so the node sends its SIP (res_hep_pjsip) and
    its RTCP reports (res_hep_rtcp) to the capture server.

    Example: `asterfleet asterisk hep-conf --capture 10.0.0.5:9060 --node ast1
    --capture-id 11 -o /etc/asterisk/hep.conf`, then `module reload res_hep.so`.
    """
    with user_errors():
        text = render_hep_conf(
            HepConf(
                capture_address=capture,
                capture_id=capture_id,
                capture_name=node,
                password=auth_key,
                uuid_type=uuid_type,
            )
        )
        if output is None:
            typer.echo(text, nl=False)
            return
        try:
            output.write_text(text)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from None
        typer.echo(f"wrote {output}")


@app.command("config")
@etcd_options
def config(
    out: Path = typer.Option(..., "--out", help="Directory to write the files into (created)."),
    balancer: list[str] = typer.Option(
        [],
        "--balancer",
        envvar="ASTERFLEET_BALANCERS",
        help="Address (or network) of a load balancer; repeat for each. Calls are accepted "
        "only from these. Without it, --etcd is read.",
    ),
    etcd: str | None = typer.Option(
        None,
        "--etcd",
        envvar=ENV + "ETCD",
        help="etcd endpoints: without --balancer, take the balancers' SIP addresses from their "
        "records (balancer run --sip-address).",
    ),
    cluster: str = ClusterOpt,
    agent_address: str = typer.Option(
        "127.0.0.1", "--agent-address", help="Address the node agent probes and counts from."
    ),
    sip_bind: str = typer.Option("0.0.0.0", "--sip-bind", help="Address SIP listens on."),
    sip_port: int = PortOpt(5060, "--sip-port", help="SIP port."),
    transport: list[str] = typer.Option(["udp"], "--transport", help="udp and/or tcp."),
    external_address: str | None = typer.Option(
        None, "--external-address", help="Public address behind NAT (SIP headers and SDP)."
    ),
    local_net: list[str] = typer.Option(
        [], "--local-net", help="Network reached without NAT (repeat), e.g. 10.0.0.0/8."
    ),
    rtp_ports: str = typer.Option("10000-20000", "--rtp-ports", help="Media port range."),
    ami_port: int = PortOpt(5038, "--ami-port", help="AMI port for the node agent."),
    dialplan_file: str = typer.Option(
        "dialplan.conf", "--dialplan-file", help="Your dialplan file, beside extensions.conf."
    ),
    dialplan_context: str = typer.Option(
        "fleet-dialplan", "--dialplan-context", help="The context in it that takes the calls."
    ),
    dialplan_from: Path | None = typer.Option(
        None,
        "--dialplan-from",
        envvar=ENV + "DIALPLAN_FROM",
        help="Copy your dialplan from this file into --out as --dialplan-file (with --follow: "
        "again, and reloaded, whenever it changes, e.g. a mounted ConfigMap).",
    ),
    prefix: str = typer.Option("/usr", "--prefix", help="Where Asterisk is installed."),
    config_dir: str | None = typer.Option(
        None, "--config-dir", help="Where Asterisk will read these files (default: --out)."
    ),
    state_dir: str | None = typer.Option(
        None, "--state-dir", help="Run, log, spool and db directories (default: under var)."
    ),
    container: bool = typer.Option(False, "--container", help="Log to stdout only."),
    agent_may_stop: bool = typer.Option(
        False,
        "--agent-may-stop",
        help="Give the agent's AMI user write=command, for node run --on-idle stop.",
    ),
    capture: str | None = typer.Option(
        None,
        "--capture",
        envvar="ASTERFLEET_CAPTURE_ADDRESS",
        help="HOST:PORT of the capture server: load res_hep and send every SIP message there.",
    ),
    node: str | None = typer.Option(None, "--node", help="Node name, sent as capture_name."),
    capture_id: int = typer.Option(0, "--capture-id", help="Numeric capture agent id."),
    capture_auth_key: str | None = typer.Option(
        None,
        "--capture-auth-key",
        envvar="ASTERFLEET_CAPTURE_AUTH_KEY",
        help="The capture server's --auth-key (better from the environment than the command line).",
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        help="After writing, keep running: when the balancers' addresses in etcd change, "
        "render again and reload the modules whose files changed (needs --etcd, no "
        "--balancer).",
    ),
    asterisk_binary: str | None = typer.Option(
        None,
        "--asterisk",
        help="The asterisk binary --follow reloads through (default: PREFIX/sbin/asterisk).",
    ),
    follow_metrics_listen: str | None = typer.Option(
        None,
        "--follow-metrics-listen",
        envvar=ENV + "FOLLOW_METRICS_LISTEN",
        parser=host_port,
        help="With --follow: serve Prometheus metrics on host:port (reloads, changes).",
    ),
    log_level: str = LogLevelOpt,
    log_json: bool = LogJsonOpt,
) -> None:
    """Render a fleet box's complete Asterisk configuration into --out.

    asterisk.conf, modules.conf (an explicit module list), pjsip.conf
    (an endpoint for the load balancers, identified by address, and one
    for the node agent's probe), manager.conf (the agent's AMI user, least
    privilege), extensions.conf (calls from the balancers go to your
    dialplan file; a test number for the rollout gate), rtp.conf,
    logger.conf and hep.conf. The AMI secret comes from
    ASTERFLEET_AMI_SECRET or the file named by ASTERFLEET_AMI_SECRET_FILE,
    never from the command line; the node agent reads the same variables.

    Example:

        ASTERFLEET_AMI_SECRET_FILE=/run/secrets/ami asterfleet asterisk config --out /etc/asterisk --balancer 10.0.0.2 --balancer 10.0.0.3 --capture 10.0.0.5:9060 --node ast1

    With --follow (beside a running Asterisk, as the asterfleet/asterisk
    image does) it keeps watching the balancers' records in etcd: a balancer
    added or moved is written into pjsip.conf and applied with "module reload
    res_pjsip.so" over Asterisk's control socket, without a restart. With no
    balancer record at all the last addresses stay. With --dialplan-from, a
    changed dialplan file is copied in again and reloaded (pbx_config).
    """
    import os

    from asterfleet.asterisk.boxconf import SECRET_FILES, BoxConfig, render_box_config
    from asterfleet.node.calls import ami_secret

    with user_errors():
        start, sep, end = rtp_ports.partition("-")
        if not sep or not start.isdigit() or not end.isdigit():
            raise UsageError(f"--rtp-ports {rtp_ports!r}: use START-END, e.g. 10000-20000")
        target = out.resolve()
        balancers = tuple(b for item in balancer for b in item.split(",") if b)
        if follow and (balancers or not etcd):
            raise UsageError(
                "--follow follows the balancers' records in etcd: give --etcd and no --balancer"
            )
        if not balancers and etcd:
            balancers = _balancers_from_etcd(etcd, cluster)
        cfg = BoxConfig(
            balancers=balancers,
            ami_secret=ami_secret(os.environ),
            agent_address=agent_address,
            sip_bind=sip_bind,
            sip_port=sip_port,
            transports=tuple(transport),
            external_address=external_address,
            local_nets=tuple(local_net),
            rtp_start=int(start),
            rtp_end=int(end),
            ami_port=ami_port,
            dialplan_file=dialplan_file,
            dialplan_context=dialplan_context,
            prefix=prefix,
            config_dir=config_dir or str(target),
            state_dir=state_dir,
            container=container,
            agent_may_stop=agent_may_stop,
            capture=HepConf(
                capture_address=capture,
                capture_id=capture_id,
                capture_name=node,
                password=capture_auth_key,
            )
            if capture
            else None,
        )
        files = render_box_config(cfg)
        if dialplan_from is not None:
            try:
                files[dialplan_file] = dialplan_from.read_text()
            except (OSError, UnicodeError) as exc:
                raise UsageError(
                    f"--dialplan-from {dialplan_from}: cannot read it ({exc}); "
                    "give the file holding your [fleet-dialplan] context"
                ) from None
        try:
            target.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                path = target / name
                path.write_text(text)
                path.chmod(0o640 if name in SECRET_FILES else 0o644)
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
        typer.echo(f"wrote {', '.join(files)} to {target}")
        if follow:
            assert etcd is not None
            binary = asterisk_binary or f"{prefix.rstrip('/')}/sbin/asterisk"
            code = _follow(
                cfg, target, etcd, cluster, binary, dialplan_from, follow_metrics_listen,
                log_level, log_json,
            )  # fmt: skip
            raise typer.Exit(code)


def _follow(
    cfg: BoxConfig,
    target: Path,
    endpoints: str,
    cluster: str,
    binary: str,
    dialplan_from: Path | None,
    metrics_listen: str | None,
    log_level: str,
    log_json: bool,
) -> int:
    import asyncio

    from asterfleet import logs, metrics
    from asterfleet.asterisk.follow import Follower, reload_module
    from asterfleet.cli.daemon import run_daemon

    logs.configure(log_level, log_json)
    security = etcd_security()
    follower = Follower(
        cfg,
        target,
        lambda module: reload_module(binary, cfg.config_dir, module),
        dialplan_source=dialplan_from,
    )
    if metrics_listen:
        metrics.serve(metrics_listen, follower.metrics.registry)

    async def main(stopping: asyncio.Event) -> int:
        await follower.run(endpoints, cluster, stopping, security=security)
        return 0

    return run_daemon(main, "asterisk.follow")


def _balancers_from_etcd(endpoints: str, cluster: str) -> tuple[str, ...]:
    """The SIP addresses the running balancers publish in etcd."""
    import asyncio

    from asterfleet.asterisk.boxconf import balancer_addresses
    from asterfleet.etcd_client import Etcd, parse_endpoints
    from asterfleet.fleet.actions import read_fleet
    from asterfleet.fleet.keys import Keyspace

    parse_endpoints(endpoints)
    security = etcd_security()

    async def go() -> tuple[str, ...]:
        async with Etcd(endpoints, security=security) as etcd:
            view = await read_fleet(etcd, Keyspace(cluster))
        return balancer_addresses(view.balancers)

    addresses = asyncio.run(go())
    if not addresses:
        raise UsageError(
            f"--etcd {endpoints}: no balancer of cluster {cluster!r} publishes a SIP address; "
            "start them with 'asterfleet balancer run --sip-address ADDRESS' or give --balancer"
        )
    return addresses
