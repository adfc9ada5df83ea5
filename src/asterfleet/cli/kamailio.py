"""`asterfleet kamailio config`: the load balancer's kamailio.cfg."""

from __future__ import annotations

from pathlib import Path

import typer

from asterfleet.cli.common import loopback_host_port, sip_socket, user_errors
from asterfleet.errors import UsageError
from asterfleet.kamailio.config import KamailioConfig, render_config, validate

app = typer.Typer(help="Kamailio for the load-balancer role.", no_args_is_help=True)


@app.command("config")
def config(
    out: Path = typer.Option(None, "--out", help="Write here (atomically) instead of stdout."),
    listen: list[str] = typer.Option(
        ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
        "--listen",
        parser=sip_socket,
        help="SIP socket proto:host:port, repeatable.",
    ),
    advertise: str = typer.Option(
        None, help="Public host:port to advertise (behind NAT or a VIP)."
    ),
    list_file: Path = typer.Option(
        Path("/etc/kamailio/dispatcher.list"), help="dispatcher.list the balancer agent writes."
    ),
    rpc_socket: Path = typer.Option(
        Path("/run/kamailio/kamailio_rpc.sock"), help="jsonrpcs datagram socket."
    ),
    rpc_http: str = typer.Option(
        None,
        parser=loopback_host_port,
        help="Also serve JSON-RPC over HTTP on host:port (loopback only: it has no login).",
    ),
    runtime_dir: Path = typer.Option(Path("/run/kamailio"), help="Kamailio's run directory."),
    set_id: int = typer.Option(1, "--set", help="Dispatcher set to route new calls to."),
    algorithm: str = typer.Option(
        "weight", help="weight, least-calls or round-robin (same as the balancer agent)."
    ),
    probing_interval: int = typer.Option(1, help="Seconds between OPTIONS probes of each node."),
    fr_timer_ms: int = typer.Option(
        2000, help="Time to the first reply before failing over to the next node."
    ),
    children: int = typer.Option(4, help="Kamailio worker processes per UDP socket."),
    capture: str = typer.Option(
        None,
        envvar="ASTERFLEET_CAPTURE_ADDRESS",
        help="Send every SIP message as HEP v3 to host:port. A host name is resolved "
        "when the config is rendered (Kamailio's resolver reads no /etc/hosts); one that "
        "does not resolve leaves capture off with a warning: calls never depend on it.",
    ),
    capture_id: int = typer.Option(1, help="HEP capture id of this balancer."),
    free_bind: bool = typer.Option(
        False,
        "--free-bind",
        help="Listen on addresses this host does not hold yet (the virtual IP on the "
        "backup balancer) without the host-wide ip_nonlocal_bind sysctl.",
    ),
    rpc_socket_owner: str = typer.Option(
        None,
        "--rpc-socket-owner",
        metavar="USER[:GROUP]",
        help="Give the JSON-RPC socket to this user (and group): Kamailio creates it "
        "as root before -u drops to that user, and the balancer agent must reach it.",
    ),
) -> None:
    """Render a complete, commented kamailio.cfg for the load-balancer role.

    Record-Route, stateful relay, a short fr_timer so a dead box is noticed
    in about two seconds, failover to the next node on timeout or 5xx, 503
    when no node is left, OPTIONS probing, JSON-RPC for the balancer agent
    and optional HEP tracing. Check it with 'kamailio -c -f FILE'.
    """
    with user_errors():
        owner_user, owner_group = _owner(rpc_socket_owner)
        capture_at = _capture_address(capture) if capture else None
        cfg = KamailioConfig(
            list_file=list_file,
            rpc_socket=rpc_socket,
            runtime_dir=runtime_dir,
            listen=tuple(listen),
            advertise=advertise,
            rpc_http=rpc_http,
            set_id=set_id,
            algorithm=algorithm,
            probing_interval=probing_interval,
            fr_timer_ms=fr_timer_ms,
            children=children,
            capture=capture_at,
            capture_id=capture_id,
            free_bind=free_bind,
            rpc_socket_user=owner_user,
            rpc_socket_group=owner_group,
        )
        validate(cfg)
        text = render_config(cfg)
        if out is None:
            typer.echo(text, nl=False)
            return
        from asterfleet.balancer.listfile import write_atomic

        try:
            write_atomic(out, text)
        except OSError as exc:
            raise UsageError(
                f"--out {out}: cannot write ({exc.strerror or exc}): choose a writable path"
            ) from None
        typer.echo(f"wrote {out}", err=True)


def _owner(value: str | None) -> tuple[str | None, str | None]:
    """``USER[:GROUP]`` of --rpc-socket-owner (checked by validate)."""
    if value is None:
        return None, None
    user, sep, group = value.partition(":")
    if not user or (sep and not group):
        raise UsageError(
            f"--rpc-socket-owner {value!r}: expected USER or USER:GROUP, e.g. asterfleet"
        )
    return user, group or None


def _capture_address(address: str) -> str | None:
    """The capture address with its name resolved, or None (capture off) when
    the name does not resolve: the balancer must start all the same."""
    from asterfleet.kamailio.config import NameNotResolved, resolve_capture

    try:
        return resolve_capture(address)  # bad syntax stays an error (exit 2)
    except NameNotResolved as exc:
        typer.echo(
            f"warning: {exc}: rendering without HEP capture (calls are not affected); "
            "render the config again once the name resolves",
            err=True,
        )
        return None
