"""Sample SIP messages and HEP packets shared by the capture tests."""

from __future__ import annotations

from asterfleet.capture.hep import HepPacket, encode_hep

INVITE = (
    b"INVITE sip:100@10.0.0.2:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
    b'From: "Alice A" <sip:alice@example.com>;tag=a1\r\n'
    b"To: <sip:100@example.com>\r\n"
    b"Call-ID: call-1@test\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"User-Agent: softphone 1.0\r\n"
    b"Content-Length: 0\r\n\r\n"
)
OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
    b'From: "Alice A" <sip:alice@example.com>;tag=a1\r\n'
    b"To: <sip:100@example.com>;tag=b1\r\n"
    b"Call-ID: call-1@test\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Server: asterisk\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def hep(payload: bytes = INVITE, **fields: object) -> bytes:
    values: dict[str, object] = {
        "src_ip": "10.0.0.1",
        "dst_ip": "10.0.0.2",
        "src_port": 5060,
        "dst_port": 5060,
        "ts_sec": 1_700_000_000,
        "ts_usec": 123456,
        "capture_id": 7,
        "capture_host": "lb1",
        **fields,
    }
    return encode_hep(HepPacket(payload=payload, **values))  # type: ignore[arg-type]
