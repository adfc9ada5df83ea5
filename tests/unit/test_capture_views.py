"""What operators look at: the PCAP export, the ladder diagram, hep.conf."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import pytest

from asterfleet.capture.hepconf import HepConf, render_hep_conf
from asterfleet.capture.ladder import build_ladder, render_svg
from asterfleet.capture.pcap import _checksum, build_pcap
from asterfleet.capture.store import Message
from asterfleet.errors import UsageError


def msg(i: int, src: str, dst: str, label: str, transport: str = "udp") -> Message:
    method = None if label.isdigit() else label
    start = f"SIP/2.0 {label} OK" if method is None else f"{label} sip:x SIP/2.0"
    return Message(
        id=i, ts_us=1_700_000_000_000_000 + i * 1000,
        src_ip=src, src_port=5060, dst_ip=dst, dst_port=5060 + i, transport=transport,
        capture_id=1, capture_host="lb1", call_id="c1", method=method,
        status=int(label) if method is None else None, cseq="1 INVITE",
        from_user="a", to_user="b", user_agent="", correlation_id="",
        raw=f"{start}\r\nCall-ID: c1\r\n\r\n".encode(),
    )  # fmt: skip


FLOW = [
    msg(3, "10.0.0.3", "10.0.0.2", "200"),
    msg(1, "10.0.0.1", "10.0.0.2", "INVITE"),
    msg(2, "10.0.0.2", "10.0.0.3", "INVITE"),
    msg(4, "10.0.0.2", "10.0.0.1", "200"),
]


def test_ladder_columns_in_first_seen_order_arrows_in_time_order() -> None:
    ladder = build_ladder(FLOW)
    hosts = ladder.hosts
    assert hosts[0] == "10.0.0.1:5060"
    assert [a.message_id for a in ladder.arrows] == [1, 2, 3, 4]
    assert [a.label for a in ladder.arrows] == ["INVITE", "INVITE", "200 OK", "200 OK"]
    assert next((hosts[a.src], hosts[a.dst]) for a in ladder.arrows) == (
        "10.0.0.1:5060",
        "10.0.0.2:5061",
    )
    assert ladder.arrows[1].delta_ms == 1.0


def test_svg_is_well_formed_and_escaped() -> None:
    evil = msg(1, "10.0.0.1", "10.0.0.2", "INVITE")
    svg = render_svg(build_ladder([evil, *FLOW[:1]]))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    groups = root.findall(".//{http://www.w3.org/2000/svg}g")
    assert [g.get("data-message-id") for g in groups] == ["1", "3"]
    assert render_svg(build_ladder([])).startswith("<svg")


def test_pcap_frames_have_valid_headers() -> None:
    data = build_pcap([*FLOW, msg(5, "2001:db8::1", "2001:db8::2", "BYE", "tcp")])
    magic, major, minor, _, _, _snap, link = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor, link) == (0xA1B2C3D4, 2, 4, 1)
    pos, frames = 24, []
    while pos < len(data):
        _sec, _usec, caplen, _length = struct.unpack("<IIII", data[pos : pos + 16])
        frames.append(data[pos + 16 : pos + 16 + caplen])
        pos += 16 + caplen
    assert len(frames) == 5
    first = frames[0]
    assert first[12:14] == b"\x08\x00"
    assert _checksum(first[14:34]) == 0  # IPv4 header checksum verifies
    assert first[14 + 9] == 17 and first[42:].startswith(b"INVITE")
    last = frames[-1]
    assert last[12:14] == b"\x86\xdd" and last[14 + 6] == 6 and last[74:].startswith(b"BYE")


def test_hep_conf_for_a_node() -> None:
    text = render_hep_conf(HepConf("10.0.0.5:9060", 11, "ast1", "s3cret"))
    assert "[general]\nenabled = yes\ncapture_address = 10.0.0.5:9060\n" in text
    assert "capture_id = 11\ncapture_name = ast1\ncapture_password = s3cret\n" in text
    assert text.endswith("uuid_type = call-id\n")


@pytest.mark.parametrize(
    "cfg",
    [
        HepConf("nohost"),
        HepConf("h:99999"),
        HepConf("h:9060", uuid_type="x"),
        HepConf("h:9060", password="a;b"),
        HepConf("h:9060", capture_id=-1),
    ],
)
def test_bad_hep_conf_input_is_refused(cfg: HepConf) -> None:
    with pytest.raises(UsageError):
        render_hep_conf(cfg)
