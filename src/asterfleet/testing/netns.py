"""Network namespaces for the VIP tests: hosts on one bridge.

:class:`NetnsLab` makes a private L2 segment: a "switch" namespace holding a
bridge, and one namespace per host joined to it by a veth pair. Everything
lives in namespaces (nothing is added to the root namespace), names carry a
random prefix so parallel tests never collide, and :meth:`NetnsLab.close`
deletes every namespace it created, which removes its interfaces too. Use
it as a context manager so that happens also on failure. Needs root.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from asterfleet.errors import AsterfleetError
from asterfleet.runtime.process import require_binary


class NetnsError(AsterfleetError):
    """An ``ip`` command failed."""


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    """Run ``ip ARGS`` (inside ``ns`` when given); its stdout."""
    argv = [require_binary("ip"), *(["-n", ns] if ns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def in_namespace(ns: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``ns`` (``ip netns exec`` execs it: same pid, signals reach it)."""
    return [require_binary("ip"), "netns", "exec", ns, *argv]


def run_in(ns: str, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        in_namespace(ns, argv), capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} in {ns} failed: {done.stderr.strip()}")
    return done


def addresses(ns: str, ifname: str) -> list[str]:
    """IPv4 addresses on ``ifname`` in ``ns`` (``10.0.0.1/24`` form)."""
    out = ip("-o", "-4", "addr", "show", "dev", ifname, ns=ns, check=False)
    return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]


@dataclass(frozen=True)
class Host:
    ns: str
    #: The interface name inside the host namespace.
    ifname: str
    address: str
    prefix: int

    def has(self, address: str) -> bool:
        return any(a.split("/")[0] == address for a in addresses(self.ns, self.ifname))


class NetnsLab:
    """A bridge and hosts, all in namespaces named ``<prefix>-…``."""

    def __init__(self, prefix: str | None = None) -> None:
        # Interface names are limited to 15 bytes: keep the prefix short.
        self.prefix = prefix or f"af{secrets.token_hex(3)}"
        self.switch = f"{self.prefix}-sw"
        self.namespaces: list[str] = []
        self.hosts: dict[str, Host] = {}
        self._veths = 0

    def open(self) -> NetnsLab:
        self._add_ns(self.switch)
        ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        ip("link", "set", "br0", "up", ns=self.switch)
        return self

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.namespaces.append(name)
        ip("link", "set", "lo", "up", ns=name)

    def add_host(self, role: str, address: str, prefix: int = 24) -> Host:
        """A namespace ``<prefix>-<role>`` with ``eth0`` at ``address/prefix`` on the bridge."""
        ns = f"{self.prefix}-{role}"
        self._add_ns(ns)
        self._veths += 1
        outer = f"{self.prefix}v{self._veths}"
        ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", outer, "netns", self.switch)
        ip("link", "set", outer, "master", "br0", ns=self.switch)
        ip("link", "set", outer, "up", ns=self.switch)
        ip("addr", "add", f"{address}/{prefix}", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        host = Host(ns, "eth0", address, prefix)
        self.hosts[role] = host
        return host

    def close(self) -> None:
        """Delete every namespace (and with them every interface) created."""
        for ns in reversed(self.namespaces):
            ip("netns", "delete", ns, check=False)
        self.namespaces.clear()

    def __enter__(self) -> NetnsLab:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
