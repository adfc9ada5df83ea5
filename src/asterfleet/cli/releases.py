"""`asterfleet releases ...`: notice new Asterisk releases and propose them."""

from __future__ import annotations

from pathlib import Path

import typer

from asterfleet.cli.common import (
    ENV,
    JsonOption,
    LogJsonOpt,
    LogLevelOpt,
    MetricsOpt,
    emit,
    print_table,
    user_errors,
)
from asterfleet.cli.common import (
    log_level as check_log_level,
)

app = typer.Typer(
    help=(
        "Watch for new Asterisk releases and propose each to the image repository as a "
        "pull/merge request (or a push).\n\n"
        "For each tracked branch (22, 20, certified-20.7 …) the newest release is read "
        "from the official listing or GitHub releases; when it is newer than the "
        "Containerfile's ASTERISK_VERSION, a commit sets ASTERISK_VERSION and "
        "ASTERISK_SHA256 (from the published checksum file) and a request is opened. "
        "A version is never proposed twice."
    ),
    no_args_is_help=True,
)

ConfigOpt = typer.Option(
    Path("/etc/asterfleet/releases.toml"),
    "--config",
    envvar=ENV + "RELEASES_CONFIG",
    help="The watcher's TOML file (branches, feed, repository, forge, webhook).",
)


@app.command()
def check(
    config: Path = ConfigOpt,
    json_out: bool = JsonOption,
    log_level: str = typer.Option(
        "warning",
        envvar=ENV + "LOG_LEVEL",
        parser=check_log_level,
        help="debug, info, warning, error (on stderr).",
    ),
    log_json: bool = LogJsonOpt,
) -> None:
    """Check every tracked branch once; exit 1 if any check failed."""
    import httpx

    from asterfleet import logs
    from asterfleet.releases.check import check_once
    from asterfleet.releases.config import load_config

    with user_errors():
        logs.configure(log_level, log_json)
        cfg = load_config(config)
        with httpx.Client(timeout=30.0, follow_redirects=True) as client:
            results = check_once(cfg, client)

    def render() -> None:
        print_table(
            None,
            ["BRANCH", "NEWEST", "CURRENT", "OUTCOME", "FEED", "REQUEST"],
            [
                [
                    r.branch,
                    r.newest or "-",
                    r.current or "-",
                    r.outcome,
                    r.feed,
                    r.url or r.error or r.git_branch or "",
                ]
                for r in results
            ],
        )

    emit(json_out, [r.as_dict() for r in results], render)
    if any(r.outcome == "error" for r in results):
        raise typer.Exit(1)


@app.command()
def watch(
    config: Path = ConfigOpt,
    interval: float = typer.Option(900.0, "--interval", min=0.1, help="Seconds between checks."),
    max_checks: int | None = typer.Option(
        None, "--max-checks", min=1, help="Stop after this many checks [default: never]."
    ),
    metrics_listen: str | None = MetricsOpt,
    log_level: str = LogLevelOpt,
    log_json: bool = LogJsonOpt,
) -> None:
    """Check every --interval seconds until stopped (SIGTERM/SIGINT), serving
    Prometheus metrics on --metrics-listen."""
    import signal
    import threading

    from prometheus_client import CollectorRegistry

    from asterfleet import logs, metrics
    from asterfleet.releases.config import load_config
    from asterfleet.releases.watch import Metrics
    from asterfleet.releases.watch import watch as run

    with user_errors():
        logs.configure(log_level, log_json)
        cfg = load_config(config)
        registry = CollectorRegistry()
        m = Metrics(registry)
        port = metrics.serve(metrics_listen, registry) if metrics_listen else None
        logs.get("asterfleet.releases").info("releases_watch_started", metrics_port=port)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        run(cfg, m, interval, stop, max_checks)
