"""What every asterfleet command shares: output as table or JSON, and
errors as one line with exit code 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from asterfleet.errors import AsterfleetError, EtcdUnavailable, RecordError, UsageError

# Piped output (less, grep) gets wide lines instead of Rich's 80-column
# default, so URIs and ids are never cut; scripts should use --json anyway.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")

ENV = "ASTERFLEET_"

# Options shared by the fleet commands and the agents, defined once.
EtcdOpt = typer.Option(
    "127.0.0.1:2379", envvar=ENV + "ETCD", help="etcd endpoints, comma-separated host:port."
)
ClusterOpt = typer.Option(
    "default", envvar=ENV + "CLUSTER", help="Cluster name: the etcd prefix /asterfleet/CLUSTER/."
)
MetricsOpt = typer.Option(
    None, envvar=ENV + "METRICS_LISTEN", help="Serve Prometheus metrics on host:port."
)
LogLevelOpt = typer.Option("info", envvar=ENV + "LOG_LEVEL", help="debug, info, warning, error.")
LogJsonOpt = typer.Option(
    False, "--log-json", envvar=ENV + "LOG_JSON", help="Log JSON lines instead of key=value."
)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line on stderr and exit (2 = bad input, 1 = failure)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one line and a scriptable exit code."""
    try:
        yield
    except (UsageError, RecordError) as exc:
        # A RecordError here comes from what the user typed (a node id).
        fail(str(exc), 2)
    except EtcdUnavailable as exc:
        fail(str(exc), 1)
    except AsterfleetError as exc:
        fail(str(exc), 1)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    styles: dict[str, str] | None = None,
) -> None:
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        table.add_column(col, style=(styles or {}).get(col))
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)


def emit(
    as_json: bool,
    data: Any,
    render: Callable[[], None],
) -> None:
    """JSON for scripts, or the human rendering."""
    if as_json:
        print_json(data)
    else:
        render()
