"""Active-call counters: AMI parsing (recorded-style text), a fake AMI server
on loopback, the SIPp statistics counter, and counter specs."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from asterfleet.errors import UsageError
from asterfleet.node.ami import (
    AmiMessage,
    AmiSession,
    count_calls_from_channels,
    encode_action,
    parse_ami_message,
    split_ami_messages,
)
from asterfleet.node.calls import (
    AMI_SECRET_ENV,
    AMI_SECRET_FILE_ENV,
    AmiCounter,
    CallCounter,
    NoCounter,
    SippStatCounter,
    counter_from_spec,
)
from tests.fake_ami import VERSION, AmiUser, FakeAmi

# Asterisk 14+ answers a Command action with Output: fields.
MODERN_COMMAND = (
    "Response: Success\r\n"
    "ActionID: af-2\r\n"
    "Message: Command output follows\r\n"
    "Output: 4 active channels\r\n"
    "Output: 2 active calls\r\n"
    "Output: 118 calls processed\r\n"
    "\r\n"
)
# Asterisk 13 and older: Response: Follows, raw lines, --END COMMAND--.
LEGACY_COMMAND = (
    "Response: Follows\r\n"
    "Privilege: Command\r\n"
    "ActionID: af-2\r\n"
    "2 active channels\n"
    "1 active call\n"
    "57 calls processed\n"
    "--END COMMAND--\r\n"
    "\r\n"
)


def channel(linkedid: str, name: str) -> str:
    return (
        "Event: CoreShowChannel\r\n"
        "ActionID: af-2\r\n"
        f"Channel: {name}\r\n"
        "ChannelState: 6\r\n"
        "ChannelStateDesc: Up\r\n"
        f"Uniqueid: {name}-uid\r\n"
        f"Linkedid: {linkedid}\r\n"
        "Application: Dial\r\n"
        "\r\n"
    )


CORE_SHOW_CHANNELS = (
    "Response: Success\r\nActionID: af-2\r\nEventList: start\r\n"
    "Message: Channels will follow\r\n\r\n"
    + channel("1700000000.1", "PJSIP/lb-00000001")
    + channel("1700000000.1", "PJSIP/carrier-00000002")
    + channel("1700000000.3", "PJSIP/lb-00000003")
    + "Event: CoreShowChannelsComplete\r\nActionID: af-2\r\nEventList: Complete\r\n"
    "ListItems: 3\r\n\r\n"
)


# --------------------------------------------------------------------------
# Pure parsers
# --------------------------------------------------------------------------


def test_parse_modern_command_output() -> None:
    messages, rest = split_ami_messages(MODERN_COMMAND)
    assert rest == ""
    (msg,) = messages
    assert msg.get("Response") == "Success" and msg.get("actionid") == "af-2"
    assert msg.outputs == ("4 active channels", "2 active calls", "118 calls processed")


def test_parse_legacy_command_output() -> None:
    messages, rest = split_ami_messages(LEGACY_COMMAND)
    assert rest == ""
    (msg,) = messages
    assert msg.get("response") == "Follows" and msg.get("ActionID") == "af-2"
    assert msg.outputs == ("2 active channels", "1 active call", "57 calls processed")


def test_legacy_output_with_colons_and_glued_end_marker() -> None:
    text = (
        "Response: Follows\r\nPrivilege: Command\r\nActionID: 9\r\n"
        "Note: something\n0 active calls--END COMMAND--\r\n\r\n"
    )
    (msg,) = split_ami_messages(text)[0]
    assert msg.outputs[-1] == "0 active calls"


def test_split_keeps_incomplete_tail() -> None:
    banner_login = "Response: Success\r\nActionID: af-1\r\nMessage: Authentication accepted\r\n\r\n"
    messages, rest = split_ami_messages(banner_login + MODERN_COMMAND[:50])
    assert [m.get("message") for m in messages] == ["Authentication accepted"]
    more, rest = split_ami_messages(rest + MODERN_COMMAND[50:])
    assert "2 active calls" in more[0].outputs and rest == ""
    # A legacy answer is not complete until --END COMMAND--.
    partial = LEGACY_COMMAND.replace("--END COMMAND--\r\n\r\n", "")
    assert split_ami_messages(partial)[0] == []


def test_count_calls_from_channels() -> None:
    messages, _ = split_ami_messages(CORE_SHOW_CHANNELS)
    assert count_calls_from_channels(messages) == 2
    no_linked = parse_ami_message("Event: CoreShowChannel\nUniqueid: u1\n")
    assert count_calls_from_channels([no_linked, no_linked]) == 1
    assert count_calls_from_channels([]) == 0


def test_encode_action() -> None:
    assert encode_action("Login", [("Username", "u"), ("Secret", "s")]) == (
        b"Action: Login\r\nUsername: u\r\nSecret: s\r\n\r\n"
    )
    with pytest.raises(UsageError):
        encode_action("Command", [("Command", "x\r\nAction: Originate")])


def test_first_field_value_wins_and_keys_fold_case() -> None:
    msg = parse_ami_message("Response: Success\r\nactionid: 1\r\nActionID: 2\r\n")
    assert msg == AmiMessage(fields={"response": "Success", "actionid": "1"})


# --------------------------------------------------------------------------
# AmiSession against an AMI server that behaves like Asterisk 22
# --------------------------------------------------------------------------

FLEET = {"asterfleet": AmiUser("s3cret")}  # read=call, write=reporting


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Running:
    """A fake AMI and a session on it, both stopped at the end."""

    def __init__(self, users: dict[str, AmiUser] = FLEET, secret: str = "s3cret") -> None:
        self.users = users
        self.secret = secret

    async def __aenter__(self) -> tuple[FakeAmi, AmiSession]:
        self.ami = await FakeAmi(self.users).start()
        self.session = AmiSession(
            "127.0.0.1", self.ami.port, "asterfleet", self.secret, resync_interval=0.2, timeout=2
        )
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(self.session.run(self.stopping))
        return self.ami, self.session

    async def __aexit__(self, *exc: object) -> None:
        self.stopping.set()
        await asyncio.wait_for(self.task, 5)
        await self.ami.stop()


def test_one_session_counts_calls_from_events_and_reads_the_version() -> None:
    async def go() -> None:
        async with Running() as (ami, session):
            first = ami.add_call(legs=2)
            await until(lambda: session.calls == 1)
            assert session.error is None and session.version == VERSION
            ami.add_call(legs=3)
            await until(lambda: session.calls == 2)
            ami.hangup(first)
            await until(lambda: session.calls == 1)
            await asyncio.sleep(0.5)  # a few resyncs
            assert session.calls == 1
            # One login for all of it, and no command privilege used.
            assert ami.logins == 1
            assert "Command" not in ami.actions
            assert ami.actions.count("CoreShowChannels") >= 2

    asyncio.run(go())


def test_counting_goes_on_through_core_stop_gracefully() -> None:
    async def go() -> None:
        async with Running() as (ami, session):
            calls = [ami.add_call() for _ in range(3)]
            await until(lambda: session.calls == 3)
            ami.shutting_down = True  # actions refused, events still flow
            await asyncio.sleep(0.5)  # resyncs are refused meanwhile
            assert session.calls == 3 and session.error is None
            for linked in calls:
                ami.hangup(linked)
            await until(lambda: session.calls == 0)
            assert session.shutting_down
            # A new login is refused while Asterisk shuts down.
            late = AmiSession("127.0.0.1", ami.port, "asterfleet", "s3cret", timeout=2)
            stop = asyncio.Event()
            task = asyncio.create_task(late.run(stop))
            await until(lambda: late.error is not None and "shutting down" in late.error)
            assert late.calls is None
            stop.set()
            await asyncio.wait_for(task, 5)

    asyncio.run(go())


def test_a_wrong_secret_is_reported_and_retried_with_backoff() -> None:
    async def go() -> None:
        async with Running(secret="wrong") as (ami, session):
            started = time.monotonic()
            await until(lambda: session.error != "not connected yet", 5)
            assert time.monotonic() - started >= 1.0  # Asterisk's 1 s delay
            assert session.calls is None
            assert session.error is not None and "Authentication failed" in session.error
            assert "wrong" not in session.error and "wrong" not in repr(session)
            await asyncio.sleep(2.5)
            assert ami.logins <= 3  # 1 s delay + 0.5, 1, 2 s backoff: no login storm

    asyncio.run(go())


def test_reconnects_after_asterisk_drops_the_session() -> None:
    async def go() -> None:
        async with Running() as (ami, session):
            ami.add_call()
            await until(lambda: session.calls == 1)
            ami.drop_all()
            await until(lambda: session.calls is None)
            assert session.error is not None and "closed" in session.error
            ami.add_call()  # while the agent was away
            await until(lambda: session.calls == 2, 10)
            assert ami.logins == 2

    asyncio.run(go())


def test_counting_needs_reporting_not_command() -> None:
    async def go() -> None:
        events_only = {"asterfleet": AmiUser("s3cret", write=set())}
        async with Running(users=events_only) as (_, session):
            await until(lambda: session.error is not None and "Permission denied" in session.error)
            assert session.calls is None

    asyncio.run(go())


def test_unreachable_ami() -> None:
    async def go() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        session = AmiSession("127.0.0.1", port, "u", "s", timeout=1)
        stop = asyncio.Event()
        task = asyncio.create_task(session.run(stop))
        await until(lambda: session.error is not None and "refused" in session.error)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())


def test_ami_counter_reports_the_session() -> None:
    session = AmiSession("127.0.0.1", 5038, "u", "s")
    counter = AmiCounter(session)
    assert asyncio.run(counter.active_calls()) is None
    assert counter.last_error == "not connected yet"
    session.calls, session.error, session.version = 4, None, VERSION
    assert asyncio.run(counter.active_calls()) == 4
    assert counter.version == VERSION and counter.last_error is None
    assert isinstance(counter, CallCounter)


# --------------------------------------------------------------------------
# SippStatCounter and NoCounter
# --------------------------------------------------------------------------

HEADER = "CurrentCall;TotalCallCreated;SuccessfulCall(C);FailedCall(C);"


def test_sipp_stat_counter(tmp_path: Path) -> None:
    path = tmp_path / "uas.csv"
    counter = SippStatCounter(path)
    assert asyncio.run(counter.active_calls()) is None  # no file yet
    path.write_text(HEADER + "\n")
    assert asyncio.run(counter.active_calls()) is None  # no row yet
    path.write_text(f"{HEADER}\n0;0;0;0;\n7;9;2;0;\n")
    assert asyncio.run(counter.active_calls()) == 7


def test_sipp_stat_counter_stale(tmp_path: Path) -> None:
    path = tmp_path / "uas.csv"
    path.write_text(f"{HEADER}\n3;3;0;0;\n")
    old = time.time() - 60
    os.utime(path, (old, old))
    assert asyncio.run(SippStatCounter(path).active_calls()) == 3
    assert asyncio.run(SippStatCounter(path, stale_after=10).active_calls()) is None


def test_no_counter() -> None:
    assert asyncio.run(NoCounter().active_calls()) is None
    assert NoCounter().last_error == "the agent runs with --calls none"


# --------------------------------------------------------------------------
# counter_from_spec
# --------------------------------------------------------------------------

ENV = {AMI_SECRET_ENV: "s3cret"}


def test_spec_none_and_sipp() -> None:
    assert isinstance(counter_from_spec("none"), NoCounter)
    assert isinstance(counter_from_spec(" NONE "), NoCounter)
    counter = counter_from_spec("sipp-stat:/var/lib/sipp/uas.csv")
    assert isinstance(counter, SippStatCounter)
    assert counter.path == Path("/var/lib/sipp/uas.csv")
    assert isinstance(counter, CallCounter)


@pytest.mark.parametrize(
    ("spec", "host", "port", "user"),
    [
        ("ami://admin@127.0.0.1:5038", "127.0.0.1", 5038, "admin"),
        ("ami://admin@box1.example", "box1.example", 5038, "admin"),
        ("ami://fleet%40x@[::1]:6000", "::1", 6000, "fleet@x"),
    ],
)
def test_spec_ami(spec: str, host: str, port: int, user: str) -> None:
    counter = counter_from_spec(spec, env=ENV)
    assert isinstance(counter, AmiCounter)
    s = counter.session
    assert (s.host, s.port, s.username) == (host, port, user)
    assert "s3cret" not in repr(counter)


def test_spec_ami_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("from-file\n")
    counter = counter_from_spec("ami://a@127.0.0.1", env={AMI_SECRET_FILE_ENV: str(secret)})
    assert isinstance(counter, AmiCounter)
    assert counter.session._secret == "from-file"


@pytest.mark.parametrize(
    ("spec", "env", "message"),
    [
        ("", ENV, "unknown call counter spec"),
        ("sipp:/x.csv", ENV, "unknown call counter spec"),
        ("sipp-stat:", ENV, "no file path"),
        ("ami://127.0.0.1:5038", ENV, "no user name"),
        ("ami://admin@:5038", ENV, "no host"),
        ("ami://admin@127.0.0.1:99999", ENV, "bad AMI call counter spec"),
        ("ami://admin@127.0.0.1:port", ENV, "bad AMI call counter spec"),
        ("ami://admin@127.0.0.1/path", ENV, "unexpected path"),
        ("ami://admin@127.0.0.1?method=channels", ENV, "unexpected path, query"),
        ("ami://admin:pw@127.0.0.1", ENV, "must not contain a secret"),
        ("ami://admin@127.0.0.1", {}, AMI_SECRET_ENV),
        ("ami://admin@127.0.0.1", {AMI_SECRET_ENV: ""}, AMI_SECRET_ENV),
        ("ami://admin@127.0.0.1", {AMI_SECRET_FILE_ENV: "/nonexistent/x"}, "cannot read"),
    ],
)
def test_spec_rejects(spec: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        counter_from_spec(spec, env=env)


def test_spec_error_names_input() -> None:
    with pytest.raises(UsageError, match=re.escape("'ami://127.0.0.1'")):
        counter_from_spec("ami://127.0.0.1", env=ENV)
