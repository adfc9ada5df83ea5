"""`asterfleet node run`: the agent beside each Asterisk box."""

from __future__ import annotations

import typer

from asterfleet.cli.common import (
    ENV,
    ClusterOpt,
    EtcdOpt,
    LogJsonOpt,
    LogLevelOpt,
    MetricsOpt,
    default_node_id,
    etcd_options,
    etcd_security,
    fail,
    user_errors,
)

app = typer.Typer(help="The node agent, run beside each Asterisk box.", no_args_is_help=True)


def parse_labels(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--label {item!r} is not key=value (for example --label zone=a)")
        labels[key] = value
    return labels


@app.command("run")
@etcd_options
def run(
    etcd: str = EtcdOpt,
    cluster: str = ClusterOpt,
    node_id: str = typer.Option(
        None,
        "--id",
        envvar=ENV + "NODE_ID",
        help="Node id, stable across restarts [default: the host name].",
    ),
    sip_uri: str = typer.Option(
        ...,
        envvar=ENV + "SIP_URI",
        help="Where the balancers send calls: sip:HOST:PORT;transport=udp.",
    ),
    set_id: int = typer.Option(
        1, "--set", envvar=ENV + "SET", min=0, max=65535, help="Dispatcher set id."
    ),
    weight: int = typer.Option(
        1, envvar=ENV + "WEIGHT", min=0, max=1000, help="Relative weight (0 = no new calls)."
    ),
    priority: int = typer.Option(
        0, envvar=ENV + "PRIORITY", min=-1000, max=1000, help="Dispatcher priority."
    ),
    max_calls: int = typer.Option(
        0,
        envvar=ENV + "MAX_CALLS",
        min=0,
        help="Most calls the box takes (least-calls algorithm); 0 = no limit.",
    ),
    ttl: int = typer.Option(
        3,
        envvar=ENV + "TTL",
        min=2,
        max=300,
        help="Lease TTL in seconds: how soon a dead agent's node disappears.",
    ),
    probe: str = typer.Option(
        "sip",
        envvar=ENV + "PROBE",
        help="How to check the box: 'sip' (OPTIONS to --sip-uri) or 'none'.",
    ),
    probe_interval: float = typer.Option(
        1.0, envvar=ENV + "PROBE_INTERVAL", min=0.1, max=60, help="Seconds between probes."
    ),
    unhealthy_after: int = typer.Option(
        2,
        envvar=ENV + "UNHEALTHY_AFTER",
        min=1,
        max=100,
        help="Failed probes in a row before 'unhealthy'.",
    ),
    drain_timeout: float = typer.Option(
        300.0,
        envvar=ENV + "DRAIN_TIMEOUT",
        min=0,
        help="On SIGTERM, longest wait for calls to end.",
    ),
    drain_settle: float = typer.Option(
        2.0,
        envvar=ENV + "DRAIN_SETTLE",
        min=0,
        max=60,
        help="On SIGTERM, how long the box must show no calls after the balancers stopped sending new ones.",
    ),
    calls: str = typer.Option(
        "none",
        envvar=ENV + "CALLS",
        help="Where active calls are counted: none, sipp-stat:FILE, ami://USER@HOST:PORT (secret in ASTERFLEET_AMI_SECRET).",
    ),
    on_idle: str = typer.Option(
        "leave",
        "--on-idle",
        envvar=ENV + "ON_IDLE",
        help="After a SIGTERM drain ends with no calls: 'leave' the fleet, or 'stop' = ask "
        "Asterisk to 'core stop gracefully' over AMI first (needs --calls ami:// and an AMI "
        "user with write=command: asterfleet asterisk config --agent-may-stop).",
    ),
    media_address: str = typer.Option(
        None, envvar=ENV + "MEDIA_ADDRESS", help="The box's RTP address, for operators."
    ),
    version: str = typer.Option(
        None, envvar=ENV + "VERSION", help="Asterisk / image version to announce."
    ),
    label: list[str] = typer.Option([], envvar=ENV + "LABELS", help="key=value label, repeatable."),
    metrics_listen: str = MetricsOpt,
    log_level: str = LogLevelOpt,
    log_json: bool = LogJsonOpt,
) -> None:
    """Announce this box in etcd and keep its record true.

    The record lives under a lease: if this agent dies, the node disappears
    from every balancer within --ttl seconds. On SIGTERM the node drains:
    it stops taking new calls, waits until every balancer has applied that
    and the calls have ended (or --drain-timeout), then leaves and exits 0.

    Example:

        asterfleet node run --etcd 10.0.0.1:2379 --id ast-1 --sip-uri 'sip:10.0.0.11:5060;transport=udp' --calls ami://fleet@127.0.0.1:5038
    """
    # Imported here, not at the top: `asterfleet --help` and the other
    # commands do not pay for the agent, etcd, Prometheus or SIP.
    from asterfleet import logs, metrics
    from asterfleet.cli.daemon import run_daemon
    from asterfleet.etcd_client import parse_endpoints
    from asterfleet.fleet.model import check_node_id
    from asterfleet.node.agent import NodeAgent, NodeAgentConfig, NodeMetrics
    from asterfleet.node.calls import counter_from_spec
    from asterfleet.sip.options import parse_sip_uri

    with user_errors():
        parse_endpoints(etcd)
        check_node_id(node_id or default_node_id())
        parse_sip_uri(sip_uri)
        if probe not in ("sip", "none"):
            fail(f"--probe {probe!r} is not known: use 'sip' or 'none'")
        counter = counter_from_spec(calls)
        if on_idle not in ("leave", "stop"):
            fail(f"--on-idle {on_idle!r} is not known: use 'leave' or 'stop'")
        if on_idle == "stop" and not calls.strip().lower().startswith("ami://"):
            fail("--on-idle stop needs --calls ami://USER@HOST:PORT (it stops Asterisk over AMI)")
        cfg = NodeAgentConfig(
            etcd=etcd,
            etcd_security=etcd_security(),
            cluster=cluster,
            node_id=node_id or default_node_id(),
            sip_uri=sip_uri,
            set_id=set_id,
            weight=weight,
            priority=priority,
            max_calls=max_calls,
            ttl=ttl,
            probe=probe,
            probe_interval=probe_interval,
            unhealthy_after=unhealthy_after,
            drain_timeout=drain_timeout,
            drain_settle=drain_settle,
            media_address=media_address,
            on_idle=on_idle,
            version=version,
            labels=parse_labels(label),
        )
        logs.configure(log_level, log_json)
        node_metrics = NodeMetrics()
        if metrics_listen:
            metrics.parse_listen(metrics_listen)
            metrics.serve(metrics_listen, node_metrics.registry)
    agent = NodeAgent(cfg, counter, node_metrics)
    with user_errors():  # a node id held by another live agent: one line, exit 2
        code = run_daemon(agent.run, "node")
    raise typer.Exit(code)


@app.command("exec")
@etcd_options
def exec_cmd(
    node_id: str = typer.Argument(..., metavar="ID", help="The node id."),
    command: list[str] = typer.Argument(
        ..., metavar="-- CLI-COMMAND", help="The Asterisk CLI command, after --."
    ),
    etcd: str = EtcdOpt,
    cluster: str = ClusterOpt,
    by: str = typer.Option(
        None, "--by", envvar=ENV + "OPERATOR", help="Who is acting [default: your login name]."
    ),
    timeout: float = typer.Option(
        10.0, "--timeout", min=1, max=300, help="Seconds to wait for the node's answer."
    ),
) -> None:
    """Run an Asterisk CLI command on a node, over its agent's AMI session.

    The request and its result are kept in etcd (exec/NODE/…) with who
    asked and when. The node's AMI user needs write=command
    (asterfleet asterisk config --agent-may-stop gives it).

    Example:

        asterfleet node exec ast-1 -- pjsip show endpoints
    """
    import asyncio
    import getpass
    import secrets
    import time

    from asterfleet.etcd_client import Etcd, parse_endpoints
    from asterfleet.fleet.keys import Keyspace
    from asterfleet.fleet.model import check_node_id
    from asterfleet.node.execs import ExecRequest, check_command, to_json

    with user_errors():
        parse_endpoints(etcd)
        check_node_id(node_id)
        try:
            text = check_command(" ".join(command))
        except ValueError as exc:
            fail(str(exc))
        who = by
        if not who:
            try:
                who = getpass.getuser()
            except (KeyError, OSError):
                who = "unknown"
        ks = Keyspace(cluster)
        security = etcd_security()
        request_id = f"{int(time.time())}-{secrets.token_hex(4)}"
        key = ks.exec_request(node_id, request_id)

        async def go() -> ExecRequest | None:
            async with Etcd(etcd, security=security) as client:
                if await client.get(ks.node(node_id)) is None:
                    fail(f"node {node_id!r} is not in the fleet: see asterfleet fleet ls")
                req = ExecRequest(command=text, by=who, at=time.time())
                await client.put(key, to_json(req))
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    kv = await client.get(key)
                    if kv is not None:
                        got = ExecRequest.model_validate_json(kv.value)
                        if got.state != "pending":
                            return got
                    await asyncio.sleep(0.2)
                return None

        result = asyncio.run(go())
        if result is None:
            fail(f"node {node_id!r} did not answer within {timeout:g}s (is its agent running?)", 1)
        for line in result.output:
            typer.echo(line)
        if not result.ok:
            fail(f"node {node_id!r} refused {text!r}", 1)
