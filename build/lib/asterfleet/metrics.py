"""Serving Prometheus metrics from a daemon."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from asterfleet.errors import UsageError


def parse_listen(value: str, option: str = "--metrics-listen") -> tuple[str, int]:
    """``host:port`` (or ``:port``) into a pair; UsageError on bad input."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{option} {value!r} is not host:port (for example 127.0.0.1:9101)")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def serve(listen: str, registry: CollectorRegistry) -> int:
    """Start the /metrics HTTP server in a thread; the port it listens on."""
    host, port = parse_listen(listen)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound: int = server.server_address[1]
    return bound
