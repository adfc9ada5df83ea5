"""The SIP addresses a balancer publishes by default: the IP addresses of
Kamailio's listen sockets (ASTERFLEET_SIP_LISTEN), never names or wildcards."""

from __future__ import annotations

import re

import pytest

from asterfleet.errors import UsageError
from asterfleet.kamailio.config import listen_addresses


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("", ()),
        ("udp:10.0.0.2:5060 tcp:10.0.0.2:5060", ("10.0.0.2",)),
        ("udp:10.0.0.2:5060,udp:192.0.2.100:5060", ("10.0.0.2", "192.0.2.100")),
        ("udp:[fd00::2]:5060", ("fd00::2",)),
        ("udp:0.0.0.0:5060 udp:lb.example:5060", ()),
    ],
)
def test_listen_addresses(listen: str, expected: tuple[str, ...]) -> None:
    assert listen_addresses(listen) == expected


def test_a_bad_socket_is_named() -> None:
    with pytest.raises(
        UsageError, match=re.escape("ASTERFLEET_SIP_LISTEN socket 'sctp:1.2.3.4:5060'")
    ):
        listen_addresses("sctp:1.2.3.4:5060")
