"""What every asterfleet command shares: output as table or JSON, and
errors as one line with exit code 2."""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, cast

import typer

from asterfleet.errors import AsterfleetError, EtcdUnavailable, RecordError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from asterfleet.etcd_client import EtcdSecurity


class _ConsoleOnFirstUse:
    """A Rich console made when something is first printed through it.

    Importing Rich costs about 7 MB and 20 ms: `--json` listings and the
    agents (which only log) never pay for it. tests/unit/test_cli_imports.py
    checks that they do not."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            # Piped output (less, grep) gets wide lines instead of Rich's
            # 80-column default, so URIs and ids are never cut; scripts
            # should use --json anyway.
            width = None if self._stderr or sys.stdout.isatty() else 200
            self._console = Console(width=width, stderr=self._stderr)
        return getattr(self._console, name)


console = cast("Console", _ConsoleOnFirstUse(stderr=False))
err_console = cast("Console", _ConsoleOnFirstUse(stderr=True))

JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")

ENV = "ASTERFLEET_"

# -- parameter types, checked once when the command line is parsed --------------
# Each turns a bad value into click's one-line "Invalid value for '--x': …"
# and exit code 2, before any command body runs.

LOG_LEVELS = ("debug", "info", "warning", "error")


def cluster_name(value: str) -> str:
    """A cluster name that stays inside /asterfleet/CLUSTER/."""
    from asterfleet.fleet.keys import check_cluster_name

    try:
        return check_cluster_name(value)
    except UsageError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--cluster {value!r}: ")) from None


def log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not a log level: use {', '.join(LOG_LEVELS)}")
    return value.lower()


def host_port(value: str) -> str:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) with a port from 1 to 65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(
            f"{value!r} is not HOST:PORT (a port from 1 to 65535), e.g. 127.0.0.1:9100"
        )
    return value


def sip_socket(value: str) -> str:
    """``[udp|tcp|tls|sctp:]HOST:PORT``, as Kamailio's ``listen``."""
    proto, sep, rest = value.partition(":")
    value_checked = rest if sep and proto in ("udp", "tcp", "tls", "sctp") else value
    try:
        host_port(value_checked)
    except typer.BadParameter:
        raise typer.BadParameter(
            f"{value!r} is not PROTO:HOST:PORT (udp, tcp, tls or sctp; a port from 1 to "
            "65535), e.g. udp:10.0.0.1:5060"
        ) from None
    return value


def parsed_by(check: Callable[[str], object]) -> Callable[[str], str]:
    """A parser that runs ``check`` (which raises UsageError on bad input)
    and keeps the text: for options whose own module knows their format."""

    def parse(value: str) -> str:
        try:
            check(value)
        except UsageError as exc:
            raise typer.BadParameter(str(exc)) from None
        return value

    return parse


def rpc_target(value: str) -> str:
    """Kamailio's jsonrpcs target: a unix socket path or an http(s):// URL."""
    from asterfleet.errors import RpcError
    from asterfleet.kamailio.rpc import check_target

    try:
        check_target(value)
    except RpcError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def loopback_host_port(value: str) -> str:
    """``HOST:PORT`` on a loopback address (for unauthenticated control interfaces)."""
    import ipaddress

    host = host_port(value).rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise typer.BadParameter(
            f"{value!r} is not on loopback: this interface has no authentication, "
            "give 127.0.0.1:PORT"
        )
    return value


def PortOpt(default: int, *decls: str, help: str, off: bool = False) -> Any:
    """A TCP port option: 1-65535 (0 too when ``off``: 0 = switched off)."""
    return typer.Option(default, *decls, min=0 if off else 1, max=65535, help=help)


# Options shared by the fleet commands and the agents, defined once.
EtcdOpt = typer.Option(
    "127.0.0.1:2379", envvar=ENV + "ETCD", help="etcd endpoints, comma-separated host:port."
)
ClusterOpt = typer.Option(
    "default",
    "--cluster",
    envvar=ENV + "CLUSTER",
    parser=cluster_name,
    help="Cluster name: the etcd prefix /asterfleet/CLUSTER/.",
)
MetricsOpt = typer.Option(
    None,
    envvar=ENV + "METRICS_LISTEN",
    parser=host_port,
    help="Serve Prometheus metrics on host:port.",
)
MetricsTokenOpt = typer.Option(
    None,
    "--metrics-token-file",
    envvar=ENV + "METRICS_TOKEN_FILE",
    help="Answer /metrics on --metrics-listen only with 'Authorization: Bearer <token>', "
    "the one line in this file (Prometheus' credentials_file): for a listener on an "
    "address others reach. Default: no login.",
)
LogLevelOpt = typer.Option(
    "info", envvar=ENV + "LOG_LEVEL", parser=log_level, help="debug, info, warning, error."
)
LogJsonOpt = typer.Option(
    False, "--log-json", envvar=ENV + "LOG_JSON", help="Log JSON lines instead of key=value."
)


def default_node_id() -> str:
    """The host name, made a valid node or balancer id (stable across restarts)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0]).strip("-._")
    return name[:63] or "node"


# How every etcd-speaking command proves who it is, declared once: the
# decorator below adds these options to a command and keeps the result for
# ``etcd_security()``. The password comes from the environment or a file,
# never from the command line (argv is world-readable in /proc).
_ETCD_SECURITY_OPTIONS: list[tuple[str, Any, Any]] = [
    (
        "etcd_cacert",
        Path | None,
        typer.Option(
            None,
            "--etcd-cacert",
            envvar=ENV + "ETCD_CACERT",
            help="Talk TLS to etcd and trust this CA (PEM).",
        ),
    ),
    (
        "etcd_cert",
        Path | None,
        typer.Option(
            None,
            "--etcd-cert",
            envvar=ENV + "ETCD_CERT",
            help="Client certificate for etcd (PEM); with --etcd-key.",
        ),
    ),
    (
        "etcd_key",
        Path | None,
        typer.Option(
            None, "--etcd-key", envvar=ENV + "ETCD_KEY", help="Private key of --etcd-cert (PEM)."
        ),
    ),
    (
        "etcd_user",
        str | None,
        typer.Option(
            None,
            "--etcd-user",
            envvar=ENV + "ETCD_USER",
            help="etcd user (see 'asterfleet etcd secure'); its password comes from "
            "ASTERFLEET_ETCD_PASSWORD or --etcd-password-file. Without a user, etcd takes "
            "the client certificate's common name.",
        ),
    ),
    (
        "etcd_password_file",
        Path | None,
        typer.Option(
            None,
            "--etcd-password-file",
            envvar=ENV + "ETCD_PASSWORD_FILE",
            help="File holding the --etcd-user password.",
        ),
    ),
]
_etcd_security: contextvars.ContextVar[EtcdSecurity | None] = contextvars.ContextVar(
    "etcd_security", default=None
)
P = ParamSpec("P")
R = TypeVar("R")


def read_secret_file(option: str, path: Path) -> str:
    """The first line of a secret file; UsageError naming the option."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text file"
        raise UsageError(f"{option} {path}: {reason}") from None
    value = text.splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise UsageError(f"{option} {path}: the file is empty")
    return value


def build_etcd_security(
    cacert: Path | None,
    cert: Path | None,
    key: Path | None,
    user: str | None,
    password_file: Path | None,
) -> EtcdSecurity:
    from asterfleet.etcd_client import EtcdSecurity

    password = os.environ.get(ENV + "ETCD_PASSWORD") or None
    if password_file is not None:
        password = read_secret_file("--etcd-password-file", password_file)
    return EtcdSecurity(cacert, cert, key, user or None, password if user else None).check()


def etcd_options(fn: Callable[P, R]) -> Callable[..., R]:
    """Add --etcd-cacert/--etcd-cert/--etcd-key/--etcd-user/--etcd-password-file
    to a command; inside it, ``etcd_security()`` is what they say."""
    sig = inspect.signature(fn, eval_str=True)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> R:
        values = [kwargs.pop(name) for name, _, _ in _ETCD_SECURITY_OPTIONS]
        with user_errors():
            security = build_etcd_security(*values)
        token = _etcd_security.set(security)
        try:
            return fn(*args, **kwargs)
        finally:
            _etcd_security.reset(token)

    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, kind, option in _ETCD_SECURITY_OPTIONS
    ]
    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[*sig.parameters.values(), *extra]
    )
    wrapper.__annotations__ = {
        **fn.__annotations__,
        **{name: kind for name, kind, _ in _ETCD_SECURITY_OPTIONS},
    }
    return wrapper


def etcd_security() -> EtcdSecurity:
    """The etcd TLS and user of the running command (none outside one)."""
    from asterfleet.etcd_client import NO_SECURITY

    return _etcd_security.get() or NO_SECURITY


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line on stderr and exit (2 = bad input, 1 = failure)."""
    from rich.markup import escape

    # The message is text, not markup: "[addr]:port" or a user's "[/x]" must
    # print as typed (they vanished, or made rich raise).
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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
    from rich.table import Table

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
