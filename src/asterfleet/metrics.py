"""Serving Prometheus metrics from a daemon."""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server

from asterfleet.errors import UsageError


def parse_listen(value: str, option: str = "--metrics-listen") -> tuple[str, int]:
    """``host:port`` (or ``:port``) into a pair; UsageError on bad input."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{option} {value!r} is not host:port (for example 127.0.0.1:9101)")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def read_token_file(path: Path, option: str = "--metrics-token-file") -> str:
    """The scrape token in ``path`` (its first line); UsageError if unreadable or empty."""
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"{option} {path}: cannot read it ({reason})") from None
    if not token or "\n" in token:
        raise UsageError(f"{option} {path}: expected one line, the scrape token")
    return token


class TokenFile:
    """The scrape token of ``path``, read again whenever the file changes.

    Kubernetes updates a mounted Secret in place (a new ``..data`` link), so
    a rotated token is taken without a restart. A file that becomes
    unreadable or empty keeps the last good token: a bad rotation never
    opens the listener, and the next good write is taken.
    """

    def __init__(self, path: Path, option: str = "--metrics-token-file") -> None:
        self.path = path
        self.option = option
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._token = read_token_file(path, option)  # UsageError at start

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> str:
        stamp = self._stat()
        with self._lock:
            if stamp is not None and stamp != self._stamp:
                try:
                    self._token = read_token_file(self.path, self.option)
                    self._stamp = stamp
                except UsageError:
                    pass  # half-written or emptied: keep the last good token
            return self._token


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bearer_only(app: WsgiApp, token: TokenFile) -> WsgiApp:
    """``app`` for requests with ``Authorization: Bearer <token>``; 401 for the rest."""

    def guarded(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").strip().encode()
        if hmac.compare_digest(given, f"Bearer {token.current()}".encode()):
            return app(environ, start)
        start(
            "401 Unauthorized",
            [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
        )
        return [b"/metrics needs 'Authorization: Bearer <token>' (--metrics-token-file)\n"]

    return guarded


def serve(listen: str, registry: CollectorRegistry, token: TokenFile | None = None) -> int:
    """Start the /metrics HTTP server in a thread; the port it listens on.

    With ``token``, only a scrape bearing the file's current token is
    answered: for a listener on an address others reach (a hostNetwork Pod,
    where no NetworkPolicy applies)."""
    host, port = parse_listen(listen)
    try:
        if token is None:
            server, _thread = start_http_server(port, addr=host, registry=registry)
            bound: int = server.server_address[1]
            return bound
        server_class = _Server6 if ":" in host else _Server
        app = bearer_only(make_wsgi_app(registry), token)
        guarded = make_server(host, port, app, server_class, handler_class=_Quiet)
    except OSError as exc:
        raise UsageError(
            f"--metrics-listen {listen}: cannot listen there ({exc.strerror or exc}): "
            "choose a free port, or another address"
        ) from None
    threading.Thread(target=guarded.serve_forever, name="metrics", daemon=True).start()
    bound = guarded.server_address[1]
    return bound
