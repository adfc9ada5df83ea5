"""Whether this host holds the virtual IP, read from /proc/net/fib_trie."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.errors import UsageError
from asterfleet.vip.holder import holds, local_ipv4_addresses, parse_vip

# Captured from a network namespace (Linux 6.18) with 10.213.9.21/24 on its
# veth and the VIP 10.213.9.100/24 added beside it, as keepalived does.
HOLDER = """\
Main:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.213.9.0/24 2 0 1
        +-- 10.213.9.0/27 2 0 2
           |-- 10.213.9.0
              /24 link UNICAST
           |-- 10.213.9.21
              /32 host LOCAL
        |-- 10.213.9.100
           /32 host LOCAL
        |-- 10.213.9.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.213.9.0/24 2 0 1
        +-- 10.213.9.0/27 2 0 2
           |-- 10.213.9.0
              /24 link UNICAST
           |-- 10.213.9.21
              /32 host LOCAL
        |-- 10.213.9.100
           /32 host LOCAL
        |-- 10.213.9.255
           /32 link BROADCAST
"""

# The same namespace on the backup: its own address only. A route to the
# VIP's network (and a default route) must not count as holding it.
BACKUP = """\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.213.9.0/24 2 0 2
        |-- 10.213.9.0
           /24 link UNICAST
        |-- 10.213.9.22
           /32 host LOCAL
        |-- 10.213.9.255
           /32 link BROADCAST
Local:
  +-- 10.213.9.0/24 2 0 2
     |-- 10.213.9.22
        /32 host LOCAL
"""


@pytest.mark.parametrize(
    ("trie", "expected"),
    [
        (HOLDER, {"10.213.9.21", "10.213.9.100", "127.0.0.1"}),
        (BACKUP, {"10.213.9.22"}),
        ("", set()),
        # One entry with two prefix lengths: the /32 LOCAL line still counts.
        ("Local:\n  |-- 10.0.0.1\n     /8 link UNICAST\n     /32 host LOCAL\n", {"10.0.0.1"}),
        # A wider host LOCAL route (127.0.0.0/8) is not an address.
        ("Local:\n  |-- 127.0.0.0\n     /8 host LOCAL\n", set()),
    ],
)
def test_local_addresses(trie: str, expected: set[str]) -> None:
    assert local_ipv4_addresses(trie) == expected


def test_holds_reads_the_trie(tmp_path: Path) -> None:
    trie = tmp_path / "fib_trie"
    trie.write_text(HOLDER)
    assert holds("10.213.9.100", trie)
    trie.write_text(BACKUP)
    assert not holds("10.213.9.100", trie)


def test_holds_on_this_host() -> None:
    assert holds("127.0.0.1")
    assert not holds("192.0.2.254")  # TEST-NET-1: on no interface here


@pytest.mark.parametrize(
    ("value", "expected"), [("10.0.0.100", "10.0.0.100"), ("10.0.0.100/24", "10.0.0.100")]
)
def test_parse_vip(value: str, expected: str) -> None:
    assert parse_vip(value) == expected


@pytest.mark.parametrize("value", ["", "vip", "10.0.0.300", "10.0.0.1/40", "::1"])
def test_parse_vip_refuses_naming_the_value(value: str) -> None:
    with pytest.raises(UsageError, match=f"--vip '{value}'"):
        parse_vip(value)
