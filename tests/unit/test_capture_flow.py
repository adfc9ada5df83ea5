"""One message, one arrow; causal order when the clocks are too coarse.

The shapes are those of a real call through Kamailio (siptrace: every
message on both hops, stamped to the microsecond) to Asterisk 22 (res_hep:
its own hop only; what it *receives* is stamped to the millisecond).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from asterfleet.capture.flow import address_aliases, call_flow, top_via_branch
from asterfleet.capture.ladder import build_ladder, render_svg
from asterfleet.capture.naming import fleet_names
from asterfleet.capture.search import summarise_call
from asterfleet.capture.store import Message

HOSTS = {"caller": "10.0.0.10", "lb": "10.0.0.1", "ast": "10.0.0.21"}
CAPTURE = {"lb1": 1, "ast1": 2}
T0 = 1_700_000_000_000_000


@dataclass
class Capture:
    """One capture: ``label`` (INVITE, 200, …), hop, CSeq, Via branches
    (top first), who captured it and when (µs after T0)."""

    label: str
    src: str
    dst: str
    cseq: str
    vias: tuple[str, ...]
    by: str
    at_us: int
    ms_only: bool = False  # Asterisk stamps what it receives to the millisecond
    extra: dict[str, str] = field(default_factory=dict)


def message(i: int, c: Capture) -> Message:
    is_request = not c.label.isdigit()
    start = f"{c.label} sip:100@x SIP/2.0" if is_request else f"SIP/2.0 {c.label} Whatever"
    vias = "".join(
        f"Via: SIP/2.0/UDP {HOSTS[h]}:5060;branch={b}\r\n"
        for h, b in (v.split("/") for v in c.vias)
    )
    raw = (
        f"{start}\r\n{vias}From: <sip:alice@x>;tag=a\r\nTo: <sip:100@x>\r\n"
        f"Call-ID: call-1\r\nCSeq: {c.cseq}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    ts = T0 + c.at_us
    if c.ms_only:
        ts -= ts % 1000
    return Message(
        id=i + 1, ts_us=ts, src_ip=HOSTS[c.src], src_port=5060, dst_ip=HOSTS[c.dst],
        dst_port=5060, transport="udp", capture_id=CAPTURE[c.by], capture_host=c.by,
        call_id="call-1", method=c.label if is_request else None,
        status=None if is_request else int(c.label), cseq=c.cseq, from_user="alice",
        to_user="100", user_agent="", correlation_id="", raw=raw,
    )  # fmt: skip


def both_ends(
    label: str, src: str, dst: str, cseq: str, vias: tuple[str, ...], sent: int, received: int
) -> list[Capture]:
    """A message on the lb↔ast hop: Kamailio and Asterisk each capture it."""
    sender, receiver = ("lb1", "ast1") if src == "lb" else ("ast1", "lb1")
    return [
        Capture(label, src, dst, cseq, vias, sender, sent),
        Capture(label, src, dst, cseq, vias, receiver, received, ms_only=receiver == "ast1"),
    ]


def lb_only(label: str, src: str, dst: str, cseq: str, vias: tuple[str, ...], at: int) -> Capture:
    return Capture(label, src, dst, cseq, vias, "lb1", at)


C1, L1 = "caller/zc1", "lb/zl1"
C2, L2 = "caller/zc2", "lb/zl2"
C3, L3 = "caller/zc3", "lb/zl3"

#: A whole call, in the order the captures reach the collector (any order works).
CALL = [
    lb_only("INVITE", "caller", "lb", "1 INVITE", (C1,), 1_000_300),
    lb_only("100", "lb", "caller", "1 INVITE", (C1,), 1_000_350),
    # Asterisk's receive stamp (1,000,000) is *before* the caller's INVITE.
    *both_ends("INVITE", "lb", "ast", "1 INVITE", (L1, C1), 1_000_450, 1_000_500),
    *both_ends("100", "ast", "lb", "1 INVITE", (L1, C1), 1_001_200, 1_001_300),
    *both_ends("180", "ast", "lb", "1 INVITE", (L1, C1), 1_050_000, 1_050_100),
    lb_only("180", "lb", "caller", "1 INVITE", (C1,), 1_050_200),
    *both_ends("200", "ast", "lb", "1 INVITE", (L1, C1), 2_000_000, 2_000_100),
    lb_only("200", "lb", "caller", "1 INVITE", (C1,), 2_000_200),
    lb_only("ACK", "caller", "lb", "1 ACK", (C2,), 2_010_000),
    *both_ends("ACK", "lb", "ast", "1 ACK", (L2, C2), 2_010_100, 2_010_900),
    lb_only("BYE", "caller", "lb", "2 BYE", (C3,), 5_000_800),
    # Sent at .900, received at .950, stamped 5,000,000: before the caller sent it.
    *both_ends("BYE", "lb", "ast", "2 BYE", (L3, C3), 5_000_900, 5_000_950),
    *both_ends("200", "ast", "lb", "2 BYE", (L3, C3), 5_001_500, 5_001_600),
    lb_only("200", "lb", "caller", "2 BYE", (C3,), 5_001_700),
]

CALL_ORDER = [
    "INVITE caller>lb", "100 lb>caller", "INVITE lb>ast", "100 ast>lb", "180 ast>lb",
    "180 lb>caller", "200 ast>lb", "200 lb>caller", "ACK caller>lb", "ACK lb>ast",
    "BYE caller>lb", "BYE lb>ast", "200 ast>lb", "200 lb>caller",
]  # fmt: skip

NAMES = {v: k for k, v in HOSTS.items()}


def arrows(captures: list[Capture], reverse: bool = False) -> list[str]:
    msgs = [message(i, c) for i, c in enumerate(captures)]
    if reverse:
        msgs.reverse()
    return [
        f"{f.message.label} {NAMES[f.message.src_ip]}>{NAMES[f.message.dst_ip]}"
        for f in call_flow(msgs)
    ]


@pytest.mark.parametrize(
    ("captures", "expected"),
    [
        pytest.param(CALL, CALL_ORDER, id="whole call through lb to Asterisk: 21 captures"),
        pytest.param(
            # Retransmission: lb1 captured the INVITE twice, 500 ms apart. Two arrows.
            [
                lb_only("INVITE", "caller", "lb", "1 INVITE", (C1,), 0),
                lb_only("INVITE", "caller", "lb", "1 INVITE", (C1,), 500_000),
            ],
            ["INVITE caller>lb", "INVITE caller>lb"],
            id="retransmission seen by one host stays two arrows",
        ),
        pytest.param(
            # The same message from two hosts a second apart is not one capture.
            [
                Capture("OPTIONS", "lb", "ast", "9 OPTIONS", (L1,), "lb1", 0),
                Capture("OPTIONS", "lb", "ast", "9 OPTIONS", (L1,), "ast1", 1_000_000),
            ],
            ["OPTIONS lb>ast", "OPTIONS lb>ast"],
            id="copies too far apart are not merged",
        ),
        pytest.param(
            # Different branches: two transactions, even at the same moment.
            [
                Capture("OPTIONS", "lb", "ast", "9 OPTIONS", (L1,), "lb1", 0),
                Capture("OPTIONS", "lb", "ast", "9 OPTIONS", (L2,), "ast1", 100),
            ],
            ["OPTIONS lb>ast", "OPTIONS lb>ast"],
            id="different branch, different message",
        ),
        pytest.param(
            # Asterisk's clock is 0.2 ms behind: its 100 Trying is stamped
            # before lb1's copy of the INVITE it answers.
            [
                Capture("INVITE", "lb", "ast", "1 INVITE", (L1, C1), "lb1", 2_000),
                Capture("100", "ast", "lb", "1 INVITE", (L1, C1), "ast1", 1_900),
            ],
            ["INVITE lb>ast", "100 ast>lb"],
            id="request before its response despite clock skew",
        ),
        pytest.param(
            # Asterisk receives the ACK at 3.8 ms and stamps it 3.0 ms,
            # before the 200 it sent at 3.7 ms.
            [
                Capture("200", "ast", "lb", "1 INVITE", (L1, C1), "ast1", 3_700),
                Capture("ACK", "lb", "ast", "1 ACK", (L2, C2), "ast1", 3_800, ms_only=True),
                Capture("INVITE", "lb", "ast", "1 INVITE", (L1, C1), "ast1", 3_100, ms_only=True),
            ],
            ["INVITE lb>ast", "200 ast>lb", "ACK lb>ast"],
            id="INVITE and its 200 before the ACK",
        ),
        pytest.param(
            # 100 ms apart is no rounding: the timestamps are believed.
            [
                Capture("INVITE", "lb", "ast", "1 INVITE", (L1, C1), "lb1", 100_000),
                Capture("100", "ast", "lb", "1 INVITE", (L1, C1), "ast1", 0),
            ],
            ["100 ast>lb", "INVITE lb>ast"],
            id="beyond the tolerance the clock wins",
        ),
    ],
)
def test_call_flow(captures: list[Capture], expected: list[str]) -> None:
    assert arrows(captures) == expected
    # The order the collector stored them in does not matter.
    assert arrows(captures, reverse=True) == expected


def test_each_hop_message_is_one_arrow_with_both_capture_hosts() -> None:
    msgs = [message(i, c) for i, c in enumerate(CALL)]
    ladder = build_ladder(msgs)
    assert len(msgs) == 21
    assert (len(ladder.arrows), ladder.duplicates) == (14, 7)
    hop = [a for a in ladder.arrows if {ladder.hosts[a.src], ladder.hosts[a.dst]} == {
        "10.0.0.1:5060", "10.0.0.21:5060"}]  # fmt: skip
    assert len(hop) == 7
    assert all(set(a.capture_hosts) == {"lb1", "ast1"} for a in hop)
    summary = summarise_call(msgs)
    assert (summary.messages, summary.duplicates) == (14, 7)
    assert (summary.final_status, summary.node) == (200, "10.0.0.21:5060")
    assert summary.capture_hosts == ("ast1", "lb1")
    # The ladder's times start at the earliest capture (Asterisk's ms stamp).
    assert ladder.arrows[0].label == "INVITE"


@pytest.mark.parametrize(
    ("raw", "branch"),
    [
        (b"INVITE x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", "z9hG4bK1"),
        # compact form, and the first of several Vias in one header
        (b"BYE x SIP/2.0\r\nv: SIP/2.0/UDP a;rport;branch=zA, SIP/2.0/UDP b;branch=zB\r\n", "zA"),
        # the branch keeps its case; parameter names do not matter
        (
            b"ACK x SIP/2.0\r\nVIA: SIP/2.0/TCP h;Branch=z9hG4bKAbC;received=1.2.3.4\r\n",
            "z9hG4bKAbC",
        ),
        (b"OPTIONS x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n", ""),
        (b"OPTIONS x SIP/2.0\r\nFrom: <sip:a@b>;branch=no\r\n\r\n", ""),
    ],
)
def test_top_via_branch(raw: bytes, branch: str) -> None:
    assert top_via_branch(raw) == branch


@pytest.mark.parametrize(
    ("captures", "names"),
    [
        # Kamailio sees both hops, so its address is lb's; Asterisk's then is ast's.
        (CALL, {"10.0.0.10:5060": "caller", "10.0.0.1:5060": "lb1", "10.0.0.21:5060": "ast1"}),
        # Only the balancer reports: the node stays an address.
        (
            [c for c in CALL if c.by == "lb1"],
            {"10.0.0.10:5060": "caller", "10.0.0.1:5060": "lb1"},
        ),
        # Only Asterisk reports: it shares both addresses of its one hop with
        # the balancer; nothing can be told but who sent the first request.
        ([c for c in CALL if c.by == "ast1"], {"10.0.0.1:5060": "caller"}),
    ],
)
def test_columns_are_named_after_capture_hosts(
    captures: list[Capture], names: dict[str, str]
) -> None:
    ladder = build_ladder([message(i, c) for i, c in enumerate(captures)])
    assert dict(zip(ladder.hosts, ladder.names, strict=True)) == {
        h: names.get(h, "") for h in ladder.hosts
    }
    svg = render_svg(ladder)
    for name in names.values():
        assert f">{name}</text>" in svg


PORTS = {"10.0.0.10": 5070, "10.0.0.1": 5060, "10.0.0.21": 5080}


def spelt(captures: list[Capture], ast_says: str) -> list[Message]:
    """The call with a port per host, Asterisk's own address spelt ``ast_says``
    in what it captures (as its peers send to 10.0.0.21)."""
    out = []
    for i, c in enumerate(captures):
        m = message(i, c)
        src_ip, dst_ip = m.src_ip, m.dst_ip
        if c.by == "ast1":
            src_ip = ast_says if src_ip == HOSTS["ast"] else src_ip
            dst_ip = ast_says if dst_ip == HOSTS["ast"] else dst_ip
        out.append(
            dataclasses.replace(
                m, src_ip=src_ip, src_port=PORTS[m.src_ip], dst_ip=dst_ip, dst_port=PORTS[m.dst_ip]
            )
        )
    return out


@pytest.mark.parametrize(
    "ast_says",
    [
        # Recorded on loopback: Asterisk bound to 127.0.0.3, Kamailio on
        # 127.0.0.1; res_hep_pjsip reports the source the kernel picks
        # towards Kamailio (127.0.0.1) with Asterisk's port.
        pytest.param(HOSTS["lb"], id="loopback: the balancer's IP, Asterisk's port"),
        # A multi-homed box bound to one address, routing from another.
        pytest.param("192.168.7.21", id="multi-homed: another IP of the box"),
        pytest.param(HOSTS["ast"], id="the address it is bound to (nothing to unalias)"),
    ],
)
def test_a_host_that_spells_its_own_address_differently_is_one_column(ast_says: str) -> None:
    msgs = spelt(CALL, ast_says)
    box = "10.0.0.21:5080"
    assert address_aliases(msgs) == (
        {} if ast_says == HOSTS["ast"] else {(ast_says, 5080): (HOSTS["ast"], 5080)}
    )
    ladder = build_ladder(msgs)
    assert (len(ladder.arrows), ladder.duplicates) == (14, 7)
    assert sorted(ladder.hosts) == sorted(["10.0.0.10:5070", "10.0.0.1:5060", box])
    labels = [
        f"{a.label.split()[0]} {NAMES[ladder.hosts[a.src].rpartition(':')[0]]}>"
        f"{NAMES[ladder.hosts[a.dst].rpartition(':')[0]]}"
        for a in ladder.arrows
    ]
    assert labels == CALL_ORDER
    hop = [a for a in ladder.arrows if box in (ladder.hosts[a.src], ladder.hosts[a.dst])]
    assert len(hop) == 7 and all(set(a.capture_hosts) == {"lb1", "ast1"} for a in hop)
    summary = summarise_call(msgs)
    assert (summary.messages, summary.duplicates, summary.node) == (14, 7, box)
    names = fleet_names(msgs, {box: "ast1"}.get, {"1": "lb1"}.get)
    assert names == {"10.0.0.10:5070": "caller", "10.0.0.1:5060": "lb1", box: "ast1"}


@pytest.mark.parametrize(
    ("lb_copy", "ast_copy"),
    [
        # Another port: another socket, not the same endpoint spelt twice.
        pytest.param(("10.0.0.1", 5060, "10.0.0.21", 5080), ("10.0.0.1", 5060, "10.0.0.1", 5081),
                     id="different port"),
        # Both ends differ: nothing to anchor the two spellings on.
        pytest.param(("10.0.0.1", 5060, "10.0.0.21", 5080), ("10.0.0.9", 5060, "10.0.0.1", 5080),
                     id="both ends differ"),
    ],
)  # fmt: skip
def test_copies_that_disagree_too_much_are_not_unaliased(
    lb_copy: tuple[str, int, str, int], ast_copy: tuple[str, int, str, int]
) -> None:
    base = message(0, Capture("INVITE", "lb", "ast", "1 INVITE", (L1, C1), "lb1", 0))
    copies = [
        dataclasses.replace(
            base, id=i + 1, src_ip=s, src_port=sp, dst_ip=d, dst_port=dp, capture_id=cid,
            capture_host=host, ts_us=base.ts_us + i * 100,
        )
        for i, ((s, sp, d, dp), host, cid) in enumerate(
            [(lb_copy, "lb1", 1), (ast_copy, "ast1", 2)]
        )
    ]  # fmt: skip
    assert address_aliases(copies) == {}
    assert len(call_flow(copies)) == 2
