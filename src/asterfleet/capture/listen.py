"""Where the collector listens: ``udp:``, ``tcp:`` and ``tls:`` HOST:PORT.

A module of its own (and light) so that the CLI can check ``--listen``
without loading the collector.
"""

from __future__ import annotations

from dataclasses import dataclass

from asterfleet.errors import UsageError

PROTOCOLS = ("udp", "tcp", "tls")


@dataclass(frozen=True)
class Listen:
    proto: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}:{host}:{self.port}"


def parse_listen(text: str) -> list[Listen]:
    """``udp:127.0.0.1:9060,tcp:127.0.0.1:9060`` → listeners, or UsageError."""
    out: list[Listen] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        proto, _, rest = item.partition(":")
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        if proto.lower() not in PROTOCOLS or not host or not port.isdigit():
            raise UsageError(
                f"listen address {item!r}: expected udp:HOST:PORT, tcp:HOST:PORT or "
                "tls:HOST:PORT, e.g. udp:0.0.0.0:9060,tcp:0.0.0.0:9060,tls:0.0.0.0:9061"
            )
        if not 0 <= int(port) <= 65535:
            raise UsageError(f"listen address {item!r}: port must be 0..65535")
        out.append(Listen(proto.lower(), host, int(port)))
    if not out:
        raise UsageError("--listen is empty: give e.g. udp:0.0.0.0:9060,tcp:0.0.0.0:9060")
    return out


__all__ = ["PROTOCOLS", "Listen", "parse_listen"]
