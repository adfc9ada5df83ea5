"""IRC lines and channel commands of the release watcher (pure parts)."""

from __future__ import annotations

import pytest

from asterfleet.releases.irccommands import Build, Check, Rollout, Status, interpret
from asterfleet.releases.ircproto import Message, parse_line, privmsg


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("PING :irc.test\r\n", Message("", "PING", ("irc.test",))),
        (
            ":alice!~a@127.0.0.1 PRIVMSG #ops :!build 22\r\n",
            Message("alice!~a@127.0.0.1", "PRIVMSG", ("#ops", "!build 22")),
        ),
        (
            ":irc.test 001 bot :Welcome to IRC",
            Message("irc.test", "001", ("bot", "Welcome to IRC")),
        ),
        (":bot!~b@h JOIN :#ops", Message("bot!~b@h", "JOIN", ("#ops",))),
        (":bot!~b@h join #ops", Message("bot!~b@h", "JOIN", ("#ops",))),
        ("", None),
        ("\r\n", None),
    ],
)
def test_parse_line(line: str, expected: Message | None) -> None:
    assert parse_line(line) == expected


def test_nick_and_privmsg() -> None:
    assert Message("alice!~a@h", "PRIVMSG", ()).nick == "alice"
    assert privmsg("#ops", "two\nlines\r\n") == "PRIVMSG #ops :two lines\r\n"
    long = privmsg("#ops", "x" * 1000)
    assert len(long.encode()) < 512 and long.endswith("…\r\n")


ALLOW = frozenset({"alice"})
ONLY = "is only for the nicks on the allow list"
USAGE = "alice: commands: !status, !check, !build BRANCH, !rollout CLUSTER VERSION"
NOT_BRANCH = "alice: branch 'main' is not an Asterisk branch (for example 22 or certified-20.7)"
NOT_VERSION = (
    "alice: version '22' is not an Asterisk version "
    "(for example 22.1.0, 22.1.0-rc1 or certified-20.7-cert1)"
)
BRANCHES = ("22", "certified-20.7")


@pytest.mark.parametrize(
    ("nick", "text", "expected"),
    [
        ("mallory", "!status", Status()),
        ("alice", "!check", Check()),
        ("Alice", "!build 22", Build("22")),
        ("alice", "!build certified-20.7", Build("certified-20.7")),
        ("alice", "!rollout prod 22.11.0", Rollout("prod", "22.11.0")),
        ("alice", "!rollout prod certified/20.7-cert3", Rollout("prod", "certified-20.7-cert3")),
        ("alice", "hello", None),
        ("alice", "!deploy", None),  # another bot's command
        ("mallory", "!check", f"mallory: !check {ONLY}"),
        ("mallory", "!rollout prod 22.11.0", f"mallory: !rollout {ONLY}"),
        ("alice", "!build 20", "alice: branch 20 is not tracked (22, certified-20.7)"),
        ("alice", "!build main", NOT_BRANCH),
        ("alice", "!rollout Prod! 22.1.0", "alice: cluster 'Prod!' is not a cluster name"),
        ("alice", "!rollout prod 22", NOT_VERSION),
        ("alice", "!build", USAGE),
        ("alice", "!status now", USAGE),
    ],
)  # fmt: skip
def test_commands(nick: str, text: str, expected: object) -> None:
    assert interpret(text, nick, ALLOW, BRANCHES) == expected
