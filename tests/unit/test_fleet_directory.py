"""Who held which address when (the fleet's address history), and a
call's hosts named after it: caller, lb1, ast2."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.capture.naming import fleet_names
from asterfleet.capture.store import Message
from asterfleet.console.addressbook import AddressBook, directory
from asterfleet.console.eventlog import EventRow, state_at
from asterfleet.db import open_database
from asterfleet.fleet.directory import (
    BALANCER,
    NODE,
    Directory,
    Holder,
    Sighting,
    Span,
    capture_key,
    changes,
    holders,
)
from asterfleet.fleet.model import BalancerStatus, NodeRecord
from asterfleet.fleet.view import FleetView, Parsed, build_view


def fleet(
    nodes: dict[str, str], balancers: dict[str, tuple[tuple[str, ...], int | None]]
) -> FleetView:
    parsed = Parsed(
        nodes={i: NodeRecord(id=i, sip_uri=uri) for i, uri in nodes.items()},
        balancers={
            i: BalancerStatus(id=i, sip_addresses=addrs, capture_id=cid)
            for i, (addrs, cid) in balancers.items()
        },
    )
    return build_view(1, parsed)


def test_a_view_names_node_addresses_balancer_ips_and_capture_ids() -> None:
    view = fleet(
        {"ast1": "sip:10.0.1.1:5080;transport=udp", "ast2": "sip:10.0.1.2"},
        {"lb1": (("10.0.0.2",), 42), "lb2": ((), None)},
    )
    assert holders(view) == {
        Holder("10.0.1.1:5080", NODE, "ast1"),
        Holder("10.0.1.2:5060", NODE, "ast2"),  # no port in the URI: SIP's 5060
        Holder("10.0.0.2", BALANCER, "lb1"),
        Holder("capture-id:42", BALANCER, "lb1"),
    }


def test_changes_close_what_went_and_open_what_came() -> None:
    a, b, c = (Holder(f"10.0.0.{i}:5060", NODE, f"ast{i}") for i in (1, 2, 3))
    moved = Holder("10.0.0.1:5060", NODE, "ast9")  # the same address, another node
    assert changes({a, b}, {b, c}) == ([a], [c])
    assert changes({a}, {moved}) == ([a], [moved])
    assert changes({a}, {a}) == ([], [])


ADDR = "10.0.1.1:5060"
HISTORY = Directory(
    [
        Sighting(Holder(ADDR, NODE, "ast1"), since=100.0, until=200.0),
        Sighting(Holder(ADDR, NODE, "ast7"), since=300.0),  # the box was replaced
    ]
)


@pytest.mark.parametrize(
    ("at", "expected", "why"),
    [
        (150.0, "ast1", "inside ast1's interval"),
        (200.0, "ast1", "the interval's last moment"),
        (250.0, "ast1", "between two holders: the last one that held it"),
        (400.0, "ast7", "still held by ast7"),
        (50.0, "ast1", "before the history began: its first holder"),
    ],
)
def test_an_address_names_its_holder_at_the_time(at: float, expected: str, why: str) -> None:
    assert HISTORY.name(ADDR, at) == expected, why
    assert HISTORY.name("10.9.9.9:5060", at) is None


@pytest.mark.parametrize(
    ("sightings", "name", "expected", "why"),
    [
        (HISTORY.sightings(), "ast1", [(None, 300.0)], "from before the history to ast7's start"),
        (HISTORY.sightings(), "ast7", [(300.0, None)], "from its own start on"),
        (HISTORY.sightings(), "ast9", [], "never held it"),
        (
            [Sighting(Holder(ADDR, NODE, "ast1"), since=100.0, until=200.0),
             Sighting(Holder(ADDR, NODE, "ast1"), since=250.0)],
            "ast1", [(None, None)], "two sightings of one holder are one tenure",
        ),
        (
            [Sighting(Holder(ADDR, NODE, "ast1"), since=100.0, until=200.0),
             Sighting(Holder(ADDR, NODE, "ast2"), since=200.0, until=300.0),
             Sighting(Holder(ADDR, NODE, "ast1"), since=400.0)],
            "ast1", [(None, 200.0), (400.0, None)], "it came back after ast2",
        ),
        (
            [Sighting(Holder(ADDR, NODE, "ast1"), since=100.0),
             Sighting(Holder(ADDR, NODE, "ast2"), since=150.0, until=160.0)],
            "ast1", [(None, 150.0), (160.0, None)], "a short overlap by a newer holder",
        ),
    ],
)  # fmt: skip
def test_a_holders_tenures_agree_with_the_names_at_each_time(
    sightings: list[Sighting], name: str, expected: list[Span], why: str
) -> None:
    book = Directory(sightings)
    assert book.tenures(ADDR, NODE, name) == expected, why
    # The same answer as naming the address at any moment.
    for at in (0.0, 99.0, 120.0, 155.0, 199.0, 201.0, 280.0, 350.0, 450.0):
        inside = any(
            (low is None or low <= at) and (high is None or at < high) for low, high in expected
        )
        assert (book.name(ADDR, at) == name) == inside, (why, at)


def msg(i: int, src: str, dst: str, method: str | None, capture_id: int, host: str = "") -> Message:
    status = None if method else 200
    (sip, sport), (dip, dport) = (a.rsplit(":", 1) for a in (src, dst))
    return Message(
        id=i, ts_us=1_000_000 + i * 1000, src_ip=sip, src_port=int(sport), dst_ip=dip,
        dst_port=int(dport), transport="udp", capture_id=capture_id, capture_host=host,
        call_id="c1", method=method, status=status, cseq="1 INVITE", from_user="a",
        to_user="b", user_agent="", correlation_id="", raw=b"",
    )  # fmt: skip


def kamailio_call(caller: str, lb: str, node: str) -> list[Message]:
    """Kamailio (capture id 42) captures both hops; the node sends no HEP."""
    return [
        msg(1, caller, lb, "INVITE", 42),
        msg(2, lb, node, "INVITE", 42),
        msg(3, node, lb, None, 42),
        msg(4, lb, caller, None, 42),
    ]


BOOK = Directory(
    [
        Sighting(Holder("10.0.1.2:5060", NODE, "ast2"), 0.0),
        Sighting(Holder("127.0.0.1:5090", NODE, "ast3"), 0.0),
        Sighting(Holder(capture_key(42), BALANCER, "lb1"), 0.0),
        Sighting(Holder("10.0.0.2", BALANCER, "lb1"), 0.0),
        Sighting(Holder("127.0.0.1", BALANCER, "lb1"), 0.0),
    ]
)


@pytest.mark.parametrize(
    ("msgs", "expected", "why"),
    [
        (
            kamailio_call("192.0.2.9:5060", "10.0.0.2:5060", "10.0.1.2:5060"),
            {"192.0.2.9:5060": "caller", "10.0.0.2:5060": "lb1", "10.0.1.2:5060": "ast2"},
            "the node by its SIP address, the balancer by its capture id",
        ),
        (
            kamailio_call("127.0.0.1:6000", "127.0.0.1:5060", "127.0.0.1:5090"),
            {"127.0.0.1:6000": "caller", "127.0.0.1:5060": "lb1", "127.0.0.1:5090": "ast3"},
            "all on one IP: the caller is not taken for the balancer that holds the IP",
        ),
        (
            [
                msg(1, "10.0.0.2:5060", "10.0.1.5:5060", "INVITE", 0, "ast5"),
                msg(2, "10.0.1.5:5060", "10.0.0.2:5060", None, 0, "ast5"),
            ],
            {"10.0.1.5:5060": "ast5", "10.0.0.2:5060": "lb1"},
            "only Asterisk sends HEP: itself by its capture name, the balancer by its IP",
        ),
        (
            [
                msg(1, "192.0.2.9:5060", "10.0.0.8:5060", "INVITE", 77),
                msg(2, "10.0.0.8:5060", "10.0.1.8:5060", "INVITE", 77),
            ],
            {"192.0.2.9:5060": "caller"},
            "a capture id and addresses the fleet never had: the capture host names stay",
        ),
    ],
)
def test_a_calls_hosts_are_named_after_the_fleet(
    msgs: list[Message], expected: dict[str, str], why: str
) -> None:
    names = fleet_names(msgs, lambda a: BOOK.name(a, 1.0), lambda c: BOOK.name(capture_key(c), 1.0))
    assert {a: n for a, n in names.items() if a in expected} == expected, why


def test_unknown_capture_hosts_keep_their_own_name() -> None:
    msgs = [
        msg(1, "192.0.2.9:5060", "10.0.0.8:5060", "INVITE", 77),
        msg(2, "10.0.0.8:5060", "10.0.1.8:5060", "INVITE", 77),
        msg(3, "10.0.1.8:5060", "10.0.0.8:5060", None, 77),
    ]
    names = fleet_names(msgs, lambda a: None, lambda c: None)
    assert names == {"10.0.0.8:5060": "77", "192.0.2.9:5060": "caller"}


def event(at: float, kind: str, actor: str = "agent", message: str = "") -> EventRow:
    return EventRow(int(at), at, kind, "ast1", actor, message)


EVENTS = [
    event(10, "joined", message="ast1 joined set 1 at sip:10.0.1.1:5060 (starting)"),
    event(12, "active"),
    event(20, "draining", "alice@console"),
    event(30, "drained", "alice@console"),
    event(40, "undrained", "bob@cli"),
]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (5, None),
        (11, ("starting", 10, "agent", "joined")),
        (15, ("active", 12, "agent", "active")),
        (25, ("draining", 20, "alice@console", "draining")),
        (35, ("drained", 30, "alice@console", "drained")),
        (45, ("active", 40, "bob@cli", "undrained")),
    ],
)
def test_a_nodes_state_at_a_moment_comes_from_its_events(
    at: float, expected: tuple[object, ...] | None
) -> None:
    found = state_at(EVENTS, at)
    got = None if found is None else (found.state, found.since, found.actor, found.kind)
    assert got == expected


def test_the_address_book_records_who_held_what_and_survives_a_restart(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'console.db'}")
    try:
        book = AddressBook(db, "c1")
        first = fleet({"ast1": "sip:10.0.1.1:5060"}, {"lb1": ((), 42)})
        assert book.observe(first, now=100.0) == (0, 2)
        assert book.observe(first, now=101.0) == (0, 0)  # nothing changed hands: no write
        replaced = fleet({"ast7": "sip:10.0.1.1:5060"}, {"lb1": ((), 42)})
        assert book.observe(replaced, now=200.0) == (1, 1)
        restarted = AddressBook(db, "c1")  # a console restarted: reads what is still open
        assert restarted.observe(replaced, now=300.0) == (0, 0)
        other = AddressBook(db, "c2")  # another cluster in the same database
        assert other.observe(fleet({}, {}), now=300.0) == (0, 0)

        found = directory(db, "c1", ["10.0.1.1:5060", capture_key(42)])
        assert found.name("10.0.1.1:5060", 150.0) == "ast1"
        assert found.name("10.0.1.1:5060", 250.0) == "ast7"
        assert found.name(capture_key(42), 250.0) == "lb1"
        assert len(directory(db, "c2", ["10.0.1.1:5060"])) == 0
    finally:
        db.close()
