"""`asterfleet console`: serve the web console for one cluster."""

from __future__ import annotations

from pathlib import Path

import typer

from asterfleet.cli.common import (
    ClusterOpt,
    etcd_options,
    etcd_security,
    host_port,
    parsed_by,
    print_json,
    user_errors,
)
from asterfleet.cli.common import console as out
from asterfleet.errors import UsageError

ENV = "ASTERFLEET_"


def _read_password_file(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"--admin-password-file {path}: cannot read it ({exc.strerror})") from exc
    if not text:
        raise UsageError(f"--admin-password-file {path} is empty: put the password on one line")
    return text


def _images(
    registry_dir: Path | None, factory_db: str | None, identity: str, host: str | None
) -> dict[str, object] | None:
    if registry_dir is None:
        return None
    if identity != "console":
        raise UsageError(
            f"--registry-identity {identity!r}: the registry now logs in the console's "
            "users and tokens only; drop the option (or use 'console')"
        )
    if not registry_dir.is_dir():
        raise UsageError(
            f"--registry-dir {registry_dir}: not a directory; "
            "write it with 'asterfleet registry config --out DIR'"
        )
    return {
        "registry_dir": registry_dir.resolve(),
        "factory_db": factory_db,
        "registry_host": host,
    }


def _console_listen(text: str) -> object:
    from asterfleet.console.settings import parse_listen

    return parse_listen(text)


@etcd_options
def run(
    listen: str = typer.Option(
        "127.0.0.1:8080",
        envvar=ENV + "LISTEN",
        parser=parsed_by(_console_listen),
        help="Address to serve on, HOST:PORT.",
    ),
    etcd: str = typer.Option(
        "127.0.0.1:2379", envvar=ENV + "ETCD", help="etcd endpoints, comma-separated host:port."
    ),
    cluster: str = ClusterOpt,
    db: str = typer.Option(
        None,
        "--db",
        envvar=ENV + "CONSOLE_DB",
        help="Where users, tokens, sessions and events live: sqlite:///PATH, a file path, or "
        "postgresql://USER:PASS@HOST/DB [default: ~/.local/state/asterfleet/console.db].",
    ),
    admin_password_file: Path = typer.Option(
        None,
        "--admin-password-file",
        help="First start only: when no user exists, create 'admin' with the password in "
        "this file (or in ASTERFLEET_ADMIN_PASSWORD).",
    ),
    secure_cookies: bool = typer.Option(
        False,
        "--secure-cookies",
        envvar=ENV + "SECURE_COOKIES",
        help="Mark cookies Secure: set this when the console is served over HTTPS.",
    ),
    registry_dir: Path = typer.Option(
        None,
        "--registry-dir",
        envvar=ENV + "REGISTRY_DIR",
        help="Also serve the image registry's token endpoint, its hooks and the Images and "
        "Builds pages: the directory 'asterfleet registry config --out DIR' wrote.",
    ),
    factory_db: str = typer.Option(
        None,
        "--factory-db",
        envvar=ENV + "FACTORY_DB",
        help="Knots, builds and catalogue: sqlite:///PATH or postgresql://… "
        "[default: the factory's own SQLite file].",
    ),
    registry_identity: str = typer.Option(
        "console",
        "--registry-identity",
        envvar=ENV + "REGISTRY_IDENTITY",
        help="Deprecated: the registry always logs in the console's users and API "
        "tokens ('console', the only value left).",
        hidden=True,
    ),
    registry_host: str = typer.Option(
        None, "--registry-host", help="HOST:PORT shown in pull commands [default: the registry]."
    ),
    capture_db: str = typer.Option(
        None,
        "--capture-db",
        envvar=ENV + "CAPTURE_DB",
        help="The Calls page: the database 'asterfleet capture run --db URL' writes to "
        "(a SQLite file path or postgresql://…).",
    ),
    metrics_listen: str = typer.Option(
        None,
        "--metrics-listen",
        envvar=ENV + "CONSOLE_METRICS_LISTEN",
        parser=host_port,
        help="Also serve /metrics on HOST:PORT without a login (a private address "
        "Prometheus reaches). /metrics on --listen always needs a login: a token "
        "with scope 'metrics'.",
    ),
    history_retention: str = typer.Option(
        None,
        "--history-retention",
        envvar=ENV + "HISTORY_RETENTION",
        help="Delete fleet events and address sightings older than this (7d, 12h): give the "
        "capture server's --retention, so every stored call keeps its names and events "
        "[default: keep them].",
    ),
    show_config: bool = typer.Option(
        False, "--show-config", help="Print the settings as JSON and exit."
    ),
) -> None:
    """Serve the web console: the fleet live, drain/undrain/weight, balancers,
    events, and the JSON API at /api/v1 (OpenAPI at /api/openapi.json).

    Log in with a user made by `asterfleet users add NAME`; on a brand-new
    database, `--admin-password-file` creates the first one, `admin`.
    Prometheus metrics are at /metrics, for a token with scope `metrics`
    (`asterfleet users token create prometheus --scopes metrics`, used as
    Prometheus' bearer token), or without a login on --metrics-listen.
    """
    import os

    from asterfleet.console.settings import ConsoleSettings, parse_listen
    from asterfleet.etcd_client import parse_endpoints

    with user_errors():
        host, port = parse_listen(listen)
        parse_endpoints(etcd)
        password = _read_password_file(admin_password_file) or os.environ.get(
            ENV + "ADMIN_PASSWORD"
        )
        settings = ConsoleSettings.model_validate(
            {
                "listen_host": host,
                "listen_port": port,
                "etcd": etcd,
                "cluster": cluster,
                "db_url": db,
                "admin_password": password,
                "secure_cookies": secure_cookies,
                "images": _images(registry_dir, factory_db, registry_identity, registry_host),
                "capture_db": capture_db,
                "metrics_listen": metrics_listen,
                "history_retention": _history_retention(history_retention),
            }
        )
        if show_config:
            print_json(settings.shown())
            return
        import uvicorn

        from asterfleet.console import create_app
        from asterfleet.etcd_client import Etcd

        security = etcd_security()
        app = create_app(
            settings, etcd_factory=lambda endpoints: Etcd(endpoints, security=security)
        )
        if metrics_listen:
            from asterfleet.metrics import serve

            serve(metrics_listen, app.state.console.metrics.registry)
    out.print(
        f"asterfleet console for cluster {cluster!r} on http://{host}:{port}/", highlight=False
    )
    # What start-up loaded (modules, the app, SQLAlchemy's tables) stays for
    # the process's life: out of the collector's sight, a full collection
    # takes under 1 ms instead of about 40 ms (a pause in every request
    # that happens to trigger one).
    import gc

    gc.collect()
    gc.freeze()
    # Open live pages (server-sent events) must not hold a shutdown up.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )


def _history_retention(text: str | None) -> float | None:
    if not text:
        return None
    from asterfleet.capture.store import parse_duration

    try:
        return parse_duration(text)
    except UsageError as exc:
        raise UsageError(f"--history-retention: {exc}") from None
