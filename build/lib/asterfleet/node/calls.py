"""Where the node agent learns how many calls its box is carrying.

A :class:`CallCounter` answers ``await active_calls()`` with a number, or None
when the count is unknown (no source, or the source failed): the agent then
publishes no count and a drain falls back to its timeout. Counters never
raise for runtime trouble.

* :class:`NoCounter` - no source.
* :class:`SippStatCounter` - a SIPp UAS statistics CSV (the lab's boxes).
* :class:`AmiCounter` - Asterisk's Manager Interface (AMI): log in, run
  ``core show channels count`` (or count ``CoreShowChannel`` events), log off.

:func:`counter_from_spec` builds one from ``none``, ``sipp-stat:/path.csv``
or ``ami://user@host[:port]`` (secret from ``ASTERFLEET_AMI_SECRET``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from asterfleet.errors import UsageError
from asterfleet.sipp.runner import SippError, read_stat_file

AMI_SECRET_ENV = "ASTERFLEET_AMI_SECRET"
AMI_DEFAULT_PORT = 5038
AMI_METHODS = ("command", "channels")
_AMI_MAX_BUFFER = 4 * 1024 * 1024


@runtime_checkable
class CallCounter(Protocol):
    """A source of the box's active-call count."""

    async def active_calls(self) -> int | None:
        """The number of active calls now, or None when unknown."""
        ...


class NoCounter:
    """No call-count source: always unknown."""

    async def active_calls(self) -> int | None:
        return None

    def __repr__(self) -> str:
        return "NoCounter()"


class SippStatCounter:
    """Current calls from a SIPp ``-trace_stat`` CSV (``CurrentCall``).

    Unknown (None) while the file is missing or has no complete row, and -
    when ``stale_after`` is set - when the file has not been written for
    that many seconds (SIPp died, so its last row no longer tells the truth).
    """

    def __init__(self, path: Path | str, stale_after: float | None = None) -> None:
        self.path = Path(path)
        self.stale_after = stale_after

    def _read(self) -> int | None:
        try:
            if self.stale_after is not None:
                age = time.time() - self.path.stat().st_mtime
                if age > self.stale_after:
                    return None
            return read_stat_file(self.path).current_calls
        except (OSError, SippError):
            return None

    async def active_calls(self) -> int | None:
        return await asyncio.to_thread(self._read)

    def __repr__(self) -> str:
        return f"SippStatCounter({str(self.path)!r})"


# --------------------------------------------------------------------------
# AMI: pure protocol helpers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AmiMessage:
    """One AMI message: its ``Key: value`` fields (keys lower-cased, first
    value wins) and any other lines (command output in the pre-Asterisk-14
    ``Response: Follows`` form)."""

    fields: Mapping[str, str]
    lines: tuple[str, ...] = ()

    def get(self, key: str) -> str | None:
        return self.fields.get(key.lower())

    @property
    def outputs(self) -> tuple[str, ...]:
        """Command output lines, whichever form the server used."""
        return self.lines


_FIELD = re.compile(r"^([A-Za-z0-9_-]+):\s?(.*)$")
_END_COMMAND = "--END COMMAND--"


def encode_action(action: str, fields: Iterable[tuple[str, str]] = ()) -> bytes:
    """An AMI action: ``Action: X`` then fields, CRLF-separated, blank line."""
    parts = [("Action", action), *fields]
    for key, value in parts:
        if not _FIELD.match(f"{key}: x") or "\r" in value or "\n" in value:
            raise UsageError(f"AMI field {key!r} has a line break or a bad name")
    return "".join(f"{k}: {v}\r\n" for k, v in parts).encode("utf-8") + b"\r\n"


def parse_ami_message(block: str) -> AmiMessage:
    """Parse one message (the text between blank lines)."""
    fields: dict[str, str] = {}
    lines: list[str] = []
    output: list[str] = []
    for raw in block.splitlines():
        line = raw.rstrip("\r")
        if line.endswith(_END_COMMAND):
            # Old servers may end the last output line and the marker together.
            line = line[: -len(_END_COMMAND)].rstrip()
        if not line:
            continue
        m = _FIELD.match(line)
        if m and not (fields.get("response", "").lower() == "follows" and lines):
            key, value = m.group(1).lower(), m.group(2).strip()
            if key == "output":
                # Asterisk 14+: each command output line is an Output: field.
                output.append(m.group(2).rstrip())
                continue
            fields.setdefault(key, value)
        else:
            lines.append(line)
    return AmiMessage(fields=fields, lines=tuple(output + lines))


def split_ami_messages(buffer: str) -> tuple[list[AmiMessage], str]:
    """Complete messages in ``buffer`` and the unparsed rest.

    Messages end with a blank line; a ``Response: Follows`` message (old
    command output, which may itself contain blank lines) ends at the blank
    line after ``--END COMMAND--``.
    """
    text = buffer.replace("\r\n", "\n")
    messages: list[AmiMessage] = []
    while True:
        text = text.lstrip("\n")
        end = text.find("\n\n")
        if end < 0:
            break
        head = text[:end]
        if re.search(r"^Response:\s*Follows\s*$", head, re.IGNORECASE | re.MULTILINE):
            marker = text.find(_END_COMMAND)
            if marker < 0:
                break
            end = text.find("\n\n", marker)
            if end < 0:
                break
            head = text[:end]
        messages.append(parse_ami_message(head))
        text = text[end + 2 :]
    return messages, text


_ACTIVE_CALLS = re.compile(r"^\s*(\d+)\s+active\s+calls?\b", re.IGNORECASE)


def parse_channels_count(lines: Iterable[str]) -> int | None:
    """The N of the ``N active call(s)`` line of ``core show channels
    count`` output, None when there is no such line."""
    for line in lines:
        m = _ACTIVE_CALLS.match(line)
        if m:
            return int(m.group(1))
    return None


def count_calls_from_channels(events: Iterable[AmiMessage]) -> int:
    """Active calls from ``CoreShowChannel`` events: channels grouped by
    ``Linkedid`` (all channels of one call share it); a channel without one
    counts as a call on its own."""
    calls: set[str] = set()
    for i, event in enumerate(events):
        if (event.get("event") or "").lower() != "coreshowchannel":
            continue
        linked = event.get("linkedid") or f"<channel {event.get('uniqueid') or i}>"
        calls.add(linked)
    return len(calls)


class AmiError(Exception):
    """The AMI conversation failed (login refused, bad answer, I/O)."""


class AmiCounter:
    """Active calls from Asterisk's AMI (TCP, default port 5038).

    Opens a connection per query: reads the ``Asterisk Call Manager/x.y``
    banner, sends ``Login`` (``Events: off``), then either
    ``Command: core show channels count`` (method ``command``, needs the
    ``command`` write privilege) or ``CoreShowChannels`` (method
    ``channels``, counting calls by Linkedid), then ``Logoff``. Both the
    Asterisk 14+ (``Output:`` fields) and the older ``Response: Follows``
    forms of command output are understood. Any failure gives None and is
    kept in :attr:`last_error`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        method: str = "command",
        timeout: float = 3.0,
    ) -> None:
        if method not in AMI_METHODS:
            raise UsageError(f"AMI method {method!r} is not one of {', '.join(AMI_METHODS)}")
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.method = method
        self.timeout = timeout
        self.last_error: str | None = None
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        # Never show the secret.
        return f"AmiCounter({self.username}@{self.host}:{self.port}, method={self.method})"

    async def active_calls(self) -> int | None:
        try:
            async with asyncio.timeout(self.timeout):
                count = await self._query()
        except TimeoutError:
            self.last_error = f"AMI at {self.host}:{self.port} did not answer in {self.timeout:g}s"
            return None
        except (OSError, AmiError, UnicodeError) as exc:
            self.last_error = f"AMI at {self.host}:{self.port}: {exc}"
            return None
        self.last_error = None
        return count

    async def _query(self) -> int:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        conversation = _AmiConversation(reader, writer)
        try:
            banner = await reader.readline()
            if not banner.startswith(b"Asterisk Call Manager"):
                raise AmiError(f"not an AMI server (banner {banner[:60]!r})")
            login_id = f"af-{next(self._ids)}"
            login = await conversation.request(
                "Login",
                [
                    ("ActionID", login_id),
                    ("Username", self.username),
                    ("Secret", self._secret),
                    ("Events", "off"),
                ],
                login_id,
            )
            if (login.get("response") or "").lower() != "success":
                raise AmiError(f"login refused: {login.get('message') or 'no reason given'}")
            if self.method == "command":
                count = await self._count_by_command(conversation)
            else:
                count = await self._count_by_channels(conversation)
            with contextlib.suppress(OSError):
                writer.write(encode_action("Logoff", [("ActionID", f"af-{next(self._ids)}")]))
                await writer.drain()
            return count
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 0.5)

    async def _count_by_command(self, conversation: _AmiConversation) -> int:
        action_id = f"af-{next(self._ids)}"
        answer = await conversation.request(
            "Command",
            [("ActionID", action_id), ("Command", "core show channels count")],
            action_id,
        )
        response = (answer.get("response") or "").lower()
        if response not in ("success", "follows"):
            raise AmiError(f"command refused: {answer.get('message') or response or 'no reason'}")
        count = parse_channels_count(answer.outputs)
        if count is None:
            raise AmiError("no 'active calls' line in 'core show channels count' output")
        return count

    async def _count_by_channels(self, conversation: _AmiConversation) -> int:
        action_id = f"af-{next(self._ids)}"
        answer = await conversation.request(
            "CoreShowChannels", [("ActionID", action_id)], action_id
        )
        if (answer.get("response") or "").lower() != "success":
            raise AmiError(f"CoreShowChannels refused: {answer.get('message') or 'no reason'}")
        events = await conversation.collect_until(action_id, "CoreShowChannelsComplete")
        return count_calls_from_channels(events)


class _AmiConversation:
    """Reads AMI messages off a stream, keeping the ones not yet consumed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = ""
        self.pending: list[AmiMessage] = []

    async def _next(self) -> AmiMessage:
        while not self.pending:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise AmiError("connection closed by the server")
            self.buffer += chunk.decode("utf-8", errors="replace")
            if len(self.buffer) > _AMI_MAX_BUFFER:
                raise AmiError("answer too large")
            messages, self.buffer = split_ami_messages(self.buffer)
            self.pending.extend(messages)
        return self.pending.pop(0)

    async def request(
        self, action: str, fields: list[tuple[str, str]], action_id: str
    ) -> AmiMessage:
        self.writer.write(encode_action(action, fields))
        await self.writer.drain()
        while True:
            message = await self._next()
            if message.get("response") is not None and message.get("actionid") == action_id:
                return message

    async def collect_until(self, action_id: str, final_event: str) -> list[AmiMessage]:
        events: list[AmiMessage] = []
        while True:
            message = await self._next()
            if message.get("actionid") != action_id:
                continue
            if (message.get("event") or "").lower() == final_event.lower():
                return events
            events.append(message)


# --------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------

SPEC_HELP = "none, sipp-stat:/path/to/stats.csv or ami://user@host[:port][?method=channels]"


def counter_from_spec(spec: str, env: Mapping[str, str] | None = None) -> CallCounter:
    """Build a counter from a command-line spec (see :data:`SPEC_HELP`).

    The AMI secret is read from the ``ASTERFLEET_AMI_SECRET`` environment
    variable (``env`` defaults to ``os.environ``); a secret written in the
    spec is refused so it never appears on a command line.
    """
    environ = os.environ if env is None else env
    text = spec.strip()
    if text.lower() == "none":
        return NoCounter()
    if text.lower().startswith("sipp-stat:"):
        path = text[len("sipp-stat:") :]
        if not path:
            raise UsageError(
                f"call counter spec {spec!r} has no file path: use sipp-stat:/path.csv"
            )
        return SippStatCounter(Path(path))
    if text.lower().startswith("ami://"):
        return _ami_from_spec(spec, text, environ)
    raise UsageError(f"unknown call counter spec {spec!r}: use {SPEC_HELP}")


def _ami_from_spec(spec: str, text: str, environ: Mapping[str, str]) -> AmiCounter:
    def bad(why: str) -> UsageError:
        return UsageError(f"bad AMI call counter spec {spec!r}: {why} (use ami://user@host[:port])")

    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.password is not None:
        raise UsageError(
            f"AMI call counter spec must not contain a secret; set {AMI_SECRET_ENV} instead"
        )
    if not parts.username:
        raise bad("no user name")
    if not parts.hostname:
        raise bad("no host")
    if parts.path not in ("", "/") or parts.fragment:
        raise bad("unexpected path or fragment")
    method = "command"
    if parts.query:
        for item in parts.query.split("&"):
            key, _, value = item.partition("=")
            if key != "method" or value not in AMI_METHODS:
                raise bad(f"unknown option {item!r} (only method={'|'.join(AMI_METHODS)})")
            method = value
    secret = environ.get(AMI_SECRET_ENV)
    if not secret:
        raise UsageError(f"AMI call counter needs the secret in the {AMI_SECRET_ENV} variable")
    return AmiCounter(
        parts.hostname,
        port or AMI_DEFAULT_PORT,
        unquote(parts.username),
        secret,
        method=method,
    )
