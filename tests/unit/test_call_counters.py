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
from asterfleet.node.calls import (
    AMI_SECRET_ENV,
    AmiCounter,
    AmiMessage,
    CallCounter,
    NoCounter,
    SippStatCounter,
    count_calls_from_channels,
    counter_from_spec,
    encode_action,
    parse_ami_message,
    parse_channels_count,
    split_ami_messages,
)

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
    assert parse_channels_count(msg.outputs) == 2


def test_parse_legacy_command_output() -> None:
    messages, rest = split_ami_messages(LEGACY_COMMAND)
    assert rest == ""
    (msg,) = messages
    assert msg.get("response") == "Follows" and msg.get("ActionID") == "af-2"
    assert parse_channels_count(msg.outputs) == 1


def test_legacy_output_with_colons_and_glued_end_marker() -> None:
    text = (
        "Response: Follows\r\nPrivilege: Command\r\nActionID: 9\r\n"
        "Note: something\n0 active calls--END COMMAND--\r\n\r\n"
    )
    (msg,) = split_ami_messages(text)[0]
    assert parse_channels_count(msg.outputs) == 0


@pytest.mark.parametrize(
    ("lines", "count"),
    [
        (["0 active channels", "0 active calls", "0 calls processed"], 0),
        (["1 active channel", "1 active call", "1 call processed"], 1),
        (["  12 active calls"], 12),
        (["12 active channels", "3 calls processed"], None),
        (["No such command 'core show channels count'"], None),
        ([], None),
    ],
)
def test_parse_channels_count(lines: list[str], count: int | None) -> None:
    assert parse_channels_count(lines) == count


def test_split_keeps_incomplete_tail() -> None:
    banner_login = "Response: Success\r\nActionID: af-1\r\nMessage: Authentication accepted\r\n\r\n"
    messages, rest = split_ami_messages(banner_login + MODERN_COMMAND[:50])
    assert [m.get("message") for m in messages] == ["Authentication accepted"]
    more, rest = split_ami_messages(rest + MODERN_COMMAND[50:])
    assert parse_channels_count(more[0].outputs) == 2 and rest == ""
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
# AmiCounter against a fake AMI server
# --------------------------------------------------------------------------

Responder = Callable[[dict[str, str]], str]


async def _run_ami(
    respond: Responder, method: str = "command", secret: str = "s3cret"
) -> tuple[int | None, AmiCounter, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        buffer = ""
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                buffer += data.decode()
                while "\r\n\r\n" in buffer:
                    block, buffer = buffer.split("\r\n\r\n", 1)
                    action = dict(line.split(": ", 1) for line in block.split("\r\n"))
                    seen.append(action)
                    answer = respond(action)
                    # Dribble the answer to exercise reassembly.
                    for i in range(0, len(answer), 11):
                        writer.write(answer[i : i + 11].encode())
                        await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        counter = AmiCounter("127.0.0.1", port, "asterfleet", secret, method=method, timeout=2)
        result = await counter.active_calls()
    finally:
        server.close()
    return result, counter, seen


def _asterisk(command_answer: str, channels_answer: str = CORE_SHOW_CHANNELS) -> Responder:
    def respond(action: dict[str, str]) -> str:
        aid = action.get("ActionID", "")
        if action["Action"] == "Login":
            if action.get("Secret") != "s3cret":
                return (
                    f"Response: Error\r\nActionID: {aid}\r\nMessage: Authentication failed\r\n\r\n"
                )
            return (
                f"Response: Success\r\nActionID: {aid}\r\n"
                "Message: Authentication accepted\r\n\r\n"
                "Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
            )
        if action["Action"] == "Command":
            return command_answer.replace("af-2", aid)
        if action["Action"] == "CoreShowChannels":
            return channels_answer.replace("af-2", aid)
        if action["Action"] == "Logoff":
            return (
                f"Response: Goodbye\r\nActionID: {aid}\r\nMessage: Thanks for all the fish.\r\n\r\n"
            )
        return f"Response: Error\r\nActionID: {aid}\r\nMessage: Invalid/unknown command\r\n\r\n"

    return respond


@pytest.mark.parametrize(("answer", "expected"), [(MODERN_COMMAND, 2), (LEGACY_COMMAND, 1)])
def test_ami_counter_command(answer: str, expected: int) -> None:
    result, counter, seen = asyncio.run(_run_ami(_asterisk(answer)))
    assert result == expected and counter.last_error is None
    assert [a["Action"] for a in seen] == ["Login", "Command", "Logoff"]
    assert seen[0]["Username"] == "asterfleet" and seen[0]["Events"] == "off"
    assert seen[1]["Command"] == "core show channels count"


def test_ami_counter_channels_method() -> None:
    result, _, seen = asyncio.run(_run_ami(_asterisk(MODERN_COMMAND), method="channels"))
    assert result == 2
    assert [a["Action"] for a in seen] == ["Login", "CoreShowChannels", "Logoff"]


def test_ami_counter_login_refused() -> None:
    result, counter, seen = asyncio.run(_run_ami(_asterisk(MODERN_COMMAND), secret="wrong"))
    assert result is None
    assert [a["Action"] for a in seen] == ["Login"]
    assert counter.last_error is not None and "Authentication failed" in counter.last_error
    assert "wrong" not in counter.last_error and "wrong" not in repr(counter)


def test_ami_counter_command_not_permitted() -> None:
    denied = "Response: Error\r\nActionID: af-2\r\nMessage: Permission denied\r\n\r\n"
    result, counter, _ = asyncio.run(_run_ami(_asterisk(denied)))
    assert result is None and counter.last_error is not None
    assert "Permission denied" in counter.last_error


def test_ami_counter_unreachable_and_silent() -> None:
    async def run() -> tuple[int | None, int | None]:
        # A port nobody listens on.
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        refused = await AmiCounter("127.0.0.1", port, "u", "s", timeout=1).active_calls()

        # A server that never sends its banner.
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(2)
            writer.close()

        silent_server = await asyncio.start_server(mute, "127.0.0.1", 0)
        try:
            silent_port = silent_server.sockets[0].getsockname()[1]
            counter = AmiCounter("127.0.0.1", silent_port, "u", "s", timeout=0.3)
            started = time.monotonic()
            silent = await counter.active_calls()
            assert time.monotonic() - started < 1.5
            assert counter.last_error is not None and "did not answer" in counter.last_error
        finally:
            silent_server.close()
        return refused, silent

    assert asyncio.run(run()) == (None, None)


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
    ("spec", "host", "port", "user", "method"),
    [
        ("ami://admin@127.0.0.1:5038", "127.0.0.1", 5038, "admin", "command"),
        ("ami://admin@box1.example", "box1.example", 5038, "admin", "command"),
        ("ami://fleet%40x@[::1]:6000", "::1", 6000, "fleet@x", "command"),
        ("ami://admin@127.0.0.1?method=channels", "127.0.0.1", 5038, "admin", "channels"),
    ],
)
def test_spec_ami(spec: str, host: str, port: int, user: str, method: str) -> None:
    counter = counter_from_spec(spec, env=ENV)
    assert isinstance(counter, AmiCounter)
    assert (counter.host, counter.port, counter.username, counter.method) == (
        host,
        port,
        user,
        method,
    )
    assert "s3cret" not in repr(counter)


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
        ("ami://admin@127.0.0.1?method=magic", ENV, "unknown option"),
        ("ami://admin:pw@127.0.0.1", ENV, "must not contain a secret"),
        ("ami://admin@127.0.0.1", {}, AMI_SECRET_ENV),
        ("ami://admin@127.0.0.1", {AMI_SECRET_ENV: ""}, AMI_SECRET_ENV),
    ],
)
def test_spec_rejects(spec: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        counter_from_spec(spec, env=env)


def test_spec_error_names_input() -> None:
    with pytest.raises(UsageError, match=re.escape("'ami://127.0.0.1'")):
        counter_from_spec("ami://127.0.0.1", env=ENV)
