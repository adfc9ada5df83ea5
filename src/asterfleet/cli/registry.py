"""`asterfleet registry …`: the token server of the Distribution registry and
its configuration. Users, tokens and grants are `asterfleet users …`."""

from __future__ import annotations

from pathlib import Path

import typer

from asterfleet.cli.common import PortOpt, console, host_port, parsed_by, user_errors
from asterfleet.registry.config import debug_address

app = typer.Typer(
    help=(
        "The image registry: asterfleet is the token server of the CNCF "
        "Distribution registry (`docker-registry`).\n\n"
        "Start with `asterfleet registry config --out DIR --realm "
        "http://HOST:PORT/token --service NAME`, run `docker-registry serve "
        "DIR/config.yml`, then `asterfleet registry serve --config-dir DIR`. "
        "Users, tokens, namespaces and grants are the one identity: "
        "`asterfleet users add|token|namespace|grant|visibility`; each user owns "
        "the namespace of their name (`alice/…`)."
    ),
    no_args_is_help=True,
)

DbOption = typer.Option(
    None,
    "--db",
    envvar="ASTERFLEET_FACTORY_DB",
    help="The factory's database (knots, registry namespaces and grants): "
    "sqlite:///PATH, a path or postgresql://… [default: ~/.local/share/asterfleet/factory.db]",
)
ConsoleDbOption = typer.Option(
    None,
    "--console-db",
    envvar="ASTERFLEET_CONSOLE_DB",
    help="The console's database: the users and tokens that log in "
    "[default: ~/.local/state/asterfleet/console.db]",
)


@app.command()
def config(
    out: Path = typer.Option(..., "--out", help="Directory for config.yml, key and certificate."),
    realm: str = typer.Option(
        ..., "--realm", help="Token endpoint URL, e.g. http://127.0.0.1:5001/token"
    ),
    service: str = typer.Option(..., "--service", help="Service name (the token audience)."),
    issuer: str = typer.Option(None, "--issuer", help="Token issuer (default: the service)."),
    listen: str = typer.Option(
        "127.0.0.1:5000", "--listen", parser=host_port, help="Registry HOST:PORT."
    ),
    notify_url: str = typer.Option(
        None, "--notify-url", help="Catalogue hook (default: REALM's host + /hooks/registry)."
    ),
    storage: Path = typer.Option(None, "--storage", help="Blob storage (default: OUT/storage)."),
    debug_listen: str = typer.Option(
        None,
        "--debug-listen",
        parser=parsed_by(debug_address),
        help="Turn on the registry's debug listener on HOST:PORT (:PORT is loopback): "
        "its Prometheus metrics at /metrics, and pprof. It takes no login: keep it on "
        "a private address. Off by default.",
    ),
) -> None:
    """Write the registry's config.yml and the token signing key + certificate."""
    from asterfleet.registry.config import write_config

    with user_errors():
        settings = write_config(
            out, realm, service, issuer, listen, notify_url, storage, debug_listen
        )
    console.print(
        f"wrote {out / 'config.yml'} (service {settings.service}, issuer {settings.issuer}); "
        f"run: docker-registry serve {out / 'config.yml'}",
        highlight=False,
    )


@app.command()
def serve(
    config_dir: Path = typer.Option(..., "--config-dir", help="What `registry config` wrote."),
    db: str = DbOption,
    console_db: str = ConsoleDbOption,
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = PortOpt(5001, "--port", help="Port of the token server."),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Processes serving requests (one per core is a good start); one of them "
        "runs the periodic catalogue reconcile. /metrics adds up every worker's counts.",
    ),
    token_ttl: int = typer.Option(300, "--token-ttl", help="Bearer token lifetime (seconds)."),
    reconcile: float = typer.Option(
        300.0, "--reconcile-interval", help="Seconds between catalogue reconciles."
    ),
    cache_seconds: float = typer.Option(
        5.0, "--login-cache", help="Seconds a successful login and access decision are reused."
    ),
    metrics_listen: str = typer.Option(
        None,
        "--metrics-listen",
        envvar="ASTERFLEET_REGISTRY_METRICS_LISTEN",
        parser=host_port,
        help="Also serve /metrics on HOST:PORT without a login (a private address "
        "Prometheus reaches). /metrics on --port always needs a login: a token with "
        "scope 'metrics'.",
    ),
) -> None:
    """Run the token server, catalogue hook and knot webhooks.

    The console serves the same endpoints when started with --registry-dir;
    this command runs them alone (e.g. several workers for token throughput).
    Prometheus metrics are at /metrics, for a token with scope `metrics`
    (`asterfleet users token create prometheus --scopes metrics`, Prometheus'
    bearer token), or without a login on --metrics-listen. With several
    workers both show every worker's counts, added up.
    """
    from asterfleet.registry.config import read_settings
    from asterfleet.tokenserver import ServeOptions
    from asterfleet.tokenserver import serve as run_server

    with user_errors():
        read_settings(config_dir)  # fail early, with the message, before forking workers
        opts = ServeOptions(
            str(config_dir.resolve()), db, console_db, token_ttl, reconcile, cache_seconds
        )
        run_server(opts, host, port, workers, metrics_listen)


MOVED = {
    "user": "asterfleet users add|passwd|rm|ls",
    "token": "asterfleet users token create|ls|revoke",
    "namespace": "asterfleet users namespace",
    "grant": "asterfleet users grant",
    "visibility": "asterfleet users visibility",
}


def _moved(old: str) -> None:
    @app.command(
        old,
        hidden=True,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def moved() -> None:
        raise typer.Exit(_say_moved(old))


def _say_moved(old: str) -> int:
    from asterfleet.cli.common import err_console

    err_console.print(
        f"'asterfleet registry {old}' moved: use '{MOVED[old]}' (one identity for the "
        "console and the registry)",
        highlight=False,
    )
    return 2


for _old in MOVED:
    _moved(_old)
