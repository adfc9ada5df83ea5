"""Does this host hold the virtual IP right now?

Read from the kernel, not from keepalived: the address is either on one of
this network namespace's interfaces or not, whatever keepalived believes.
``/proc/net/fib_trie`` lists every local IPv4 address as a ``/32 host
LOCAL`` entry of the routing trie (of the reader's namespace, so a
container sees its Pod's addresses), with no netlink library and no
subprocess. The balancer agent exports the answer as
``asterfleet_balancer_vip_held``: summed over the balancers of one VIP it
must be 1; 0 or 2 is the "no holder / two holders" alert.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from asterfleet.errors import UsageError

FIB_TRIE = Path("/proc/net/fib_trie")


def parse_vip(value: str) -> str:
    """The address of ``10.0.0.100`` or ``10.0.0.100/24`` (the form keepalived
    and ASTERFLEET_VIP use); UsageError naming it otherwise."""
    try:
        return str(ipaddress.IPv4Interface(value).ip)
    except ValueError:
        raise UsageError(
            f"--vip {value!r} is not an IPv4 address (with or without /prefix, e.g. 10.0.0.100/24)"
        ) from None


def local_ipv4_addresses(fib_trie: str) -> frozenset[str]:
    """Every address the trie marks ``/32 host LOCAL`` (this host's own).

    An entry is a ``|-- ADDRESS`` line followed by one line per prefix
    length: ``/32 host LOCAL`` is an address of an interface here (wider
    ``host LOCAL`` entries, such as 127.0.0.0/8, are routes, not addresses).
    """
    found: set[str] = set()
    current: str | None = None
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("|-- "):
            current = text[4:].strip()
        elif current is not None and text.split() == ["/32", "host", "LOCAL"]:
            found.add(current)
        elif text.startswith("+--") or text.endswith(":"):
            current = None
    return frozenset(found)


def holds(vip: str, fib_trie: Path = FIB_TRIE) -> bool:
    """True when ``vip`` (an address) is one of this namespace's addresses."""
    return vip in local_ipv4_addresses(fib_trie.read_text())
