"""`asterfleet vip …`: the virtual IP shared by the Kamailio load balancers."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from asterfleet.cli.common import err_console, user_errors
from asterfleet.errors import UsageError
from asterfleet.vip.health import check_command as check_command_for_this_python
from asterfleet.vip.health import kamailio_healthy
from asterfleet.vip.keepalived import KeepalivedOptions, render_keepalived_conf

ENV = "ASTERFLEET_"
PASS_ENV = ENV + "VRRP_PASS"

app = typer.Typer(
    help=(
        "The virtual IP in front of the load balancers (keepalived, VRRP).\n\n"
        "Run `vip config` on each balancer with the other balancers as `--peer`, "
        "the same `--vip` and `--virtual-router-id`, and a different `--priority`; "
        "the password comes from ASTERFLEET_VRRP_PASS so it never shows in `ps`."
    ),
    no_args_is_help=True,
)


@app.command("config")
def config(
    interface: str = typer.Option(..., "--interface", help="Interface carrying the VIP."),
    vip: str = typer.Option(..., "--vip", help="Virtual IP with prefix, e.g. 10.0.0.100/24."),
    peer: list[str] = typer.Option(
        ..., "--peer", help="Another balancer's address (unicast VRRP). Repeatable."
    ),
    priority: int = typer.Option(
        ..., "--priority", help="1-254; highest wins the first election (e.g. 150 and 100)."
    ),
    rpc: str = typer.Option(
        "/run/asterfleet/kamailio_rpc.sock",
        "--rpc",
        envvar=ENV + "RPC",
        help="Kamailio JSON-RPC target checked for health: socket path or http URL.",
    ),
    router_id: str | None = typer.Option(None, "--router-id", help="This host's name in logs."),
    virtual_router_id: int = typer.Option(
        51, "--virtual-router-id", help="VRRP id 1-255, the same on every balancer of the pair."
    ),
    unicast_src: str | None = typer.Option(
        None, "--unicast-src", help="This balancer's own address [default: the interface's]."
    ),
    notify: str | None = typer.Option(
        None, "--notify", help="Command run on every state change (MASTER, BACKUP, FAULT…)."
    ),
    preempt: bool = typer.Option(
        False,
        "--preempt/--nopreempt",
        help="Let a returning higher-priority balancer take the VIP back. Off by default: "
        "that costs a second failover and can flap.",
    ),
    check_command: str = typer.Option(
        check_command_for_this_python(),
        "--check-command",
        help="Health-check command; {rpc} is replaced by --rpc. The default is the "
        "fast-starting form of `asterfleet vip check-kamailio` for this installation.",
    ),
    script_user: str = typer.Option(
        "root",
        "--script-user",
        help="User that runs the health check and --notify. Give Kamailio's user when "
        "Kamailio drops root (-u): it answers JSON-RPC only on sockets that user may reach.",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write here instead of standard output."
    ),
) -> None:
    """Render keepalived.conf for one balancer: VRRP with unicast peers and a
    password, a Kamailio JSON-RPC health check, notify hook, nopreempt."""
    with user_errors():
        password = os.environ.get(PASS_ENV, "")
        if not password:
            raise UsageError(
                f"set the VRRP password in {PASS_ENV} (at most 8 characters); it is "
                "never taken on the command line"
            )
        text = render_keepalived_conf(
            KeepalivedOptions(
                interface=interface,
                vip=vip,
                peers=peer,
                priority=priority,
                auth_pass=password,
                rpc=rpc,
                router_id=router_id,
                virtual_router_id=virtual_router_id,
                unicast_src=unicast_src,
                notify=notify,
                nopreempt=not preempt,
                check_command=check_command,
                script_user=script_user,
            )
        )
        if output is None:
            typer.echo(text, nl=False)
        else:
            from asterfleet.secretfile import write_secret

            try:
                output.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"--output {output}: cannot create its directory ({exc.strerror or exc})"
                ) from None
            write_secret(output, text, what="--output")  # holds the VRRP password


@app.command("check-kamailio")
def check_kamailio(
    rpc: str = typer.Option(
        ..., "--rpc", envvar=ENV + "RPC", help="Kamailio JSON-RPC: socket path or http URL."
    ),
    timeout: float = typer.Option(1.0, min=0.1, max=30, help="Seconds to wait for the answer."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing; exit code only."),
) -> None:
    """Exit 0 when Kamailio answers core.uptime over JSON-RPC, 1 otherwise
    (keepalived's vrrp_script)."""
    healthy, why = kamailio_healthy(rpc, timeout)
    if not quiet:
        if healthy:
            typer.echo(why)
        else:
            err_console.print(f"unhealthy: {why}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if healthy else 1)
