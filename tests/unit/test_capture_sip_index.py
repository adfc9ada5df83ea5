"""Just enough SIP to index a message; never anything but SipError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asterfleet.capture.sip_index import SipError, SipSummary, parse_sip, uri_user
from tests.unit.test_hep_samples import INVITE, OK


def test_request_is_indexed() -> None:
    assert parse_sip(INVITE) == SipSummary(
        method="INVITE",
        status=None,
        call_id="call-1@test",
        cseq="1 INVITE",
        from_user="alice",
        to_user="100",
        user_agent="softphone 1.0",
        opens_call=True,
    )


@pytest.mark.parametrize(
    ("start", "to", "opens"),
    [
        ("INVITE sip:100@x SIP/2.0", "<sip:100@x>", True),  # a new call
        ("INVITE sip:100@x SIP/2.0", "<sip:100@x>;tag=b1", False),  # a re-INVITE
        ("OPTIONS sip:x SIP/2.0", "<sip:x>", True),  # a probe: its own "call"
        ("ACK sip:100@x SIP/2.0", "<sip:100@x>", False),  # ACK of a failed INVITE
        ("CANCEL sip:100@x SIP/2.0", "<sip:100@x>", False),
        ("BYE sip:100@x SIP/2.0", "<sip:100@x>;TAG=b1", False),
        ("SIP/2.0 200 OK", "<sip:100@x>", False),  # answers never open
    ],
)
def test_which_messages_open_a_call(start: str, to: str, opens: bool) -> None:
    msg = f"{start}\r\nTo: {to}\r\nCall-ID: c\r\nCSeq: 1 X\r\n\r\n".encode()
    assert parse_sip(msg).opens_call is opens


def test_response_uses_server_as_user_agent() -> None:
    got = parse_sip(OK)
    assert (got.method, got.status, got.user_agent, got.label) == (None, 200, "asterisk", "200")
    assert got.cseq_method == "INVITE"


def test_compact_headers_lf_only_and_spaced_colons() -> None:
    msg = (
        b"bye sip:x@h SIP/2.0\n"
        b"f: <sip:bob@h>;tag=1\n"
        b"t: sip:carol@h\n"
        b"i: compact-1\n"
        b"CSeq :   2    BYE\n\n"
    )
    got = parse_sip(msg)
    assert (got.method, got.call_id, got.from_user, got.to_user, got.cseq) == (
        "BYE",
        "compact-1",
        "bob",
        "carol",
        "2 BYE",
    )


@pytest.mark.parametrize(
    ("value", "user"),
    [
        ('"Alice" <sip:alice@example.com>;tag=1', "alice"),
        ("<sips:bob;x=1@example.com>", "bob"),
        ("sip:carol@example.com;tag=2", "carol"),
        ("<sip:example.com>", ""),
        ("<tel:+15551234;phone-context=x>", "+15551234"),
        ('"sip:evil@x" <sip:real@example.com>', "real"),
        ("<sip:dave:secret@example.com>", "dave"),
        ("", ""),
        ("garbage", ""),
    ],
)
def test_uri_user(value: str, user: str) -> None:
    assert uri_user(value) == user


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not_sip"),
        (b'{"rtcp": 1}', "not_sip"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not_sip"),
        (b"SIP/2.0 abc OK\r\n\r\n", "not_sip"),
        (b"SIP/2.0 099 Low\r\n\r\n", "not_sip"),
        (b"INVITE sip:x SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n", "bad_sip"),
        (b"INVITE sip:x SIP/2.0\r\nCall-ID:   \r\n\r\n", "bad_sip"),
    ],
)
def test_not_indexable(payload: bytes, reason: str) -> None:
    with pytest.raises(SipError) as err:
        parse_sip(payload)
    assert err.value.reason == reason


def test_nul_bytes_never_reach_the_database() -> None:
    got = parse_sip(INVITE.replace(b"call-1@test", b"call\x00-1@test"))
    assert got.call_id == "call-1@test"


_LINES = st.sampled_from(
    [
        b"INVITE sip:a@b SIP/2.0",
        b"SIP/2.0 180 Ringing",
        b"Call-ID: x",
        b"i:",
        b"From: <sip:",
        b'To: "\xff\xfe" <tel:',
        b"CSeq: 1",
        b"User-Agent: \x00",
        b"",
        b":",
        b"f: <<<@>>>",
    ]
)


@settings(max_examples=400)
@given(st.lists(st.one_of(_LINES, st.binary(max_size=40)), max_size=12), st.booleans())
def test_fuzz_sip_parser_raises_only_sip_error(lines: list[bytes], crlf: bool) -> None:
    payload = (b"\r\n" if crlf else b"\n").join(lines)
    with contextlib.suppress(SipError):
        got = parse_sip(payload)
        assert got.call_id and "\x00" not in got.call_id + got.from_user + got.to_user


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_fuzz_uri_user_never_raises(value: str) -> None:
    assert isinstance(uri_user(value), str)
