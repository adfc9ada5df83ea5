"""Asterisk's Manager Interface (AMI): the protocol and one persistent session.

Pure helpers (:func:`encode_action`, :func:`parse_ami_message`,
:func:`split_ami_messages`, :func:`count_calls_from_channels`) and
:class:`AmiSession`, which keeps one AMI connection open and counts calls
from channel events, resynchronised with ``CoreShowChannels``.

Why one persistent session (Asterisk 22.10.1, observed here): during
``core stop gracefully`` Asterisk refuses every action ("Asterisk is
shutting down"), new logins included, while an open session keeps receiving
events; a failed login is answered after a 1 s delay; each login logs two
lines in Asterisk. Counting needs only ``read=call`` (Newchannel, Hangup)
and ``write=reporting`` (CoreShowChannels, CoreSettings): no ``command``
privilege, which would also allow ``core stop now``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from asterfleet.errors import UsageError

AMI_DEFAULT_PORT = 5038
_AMI_MAX_BUFFER = 4 * 1024 * 1024
SHUTTING_DOWN = "Asterisk is shutting down"


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


def _is_error(message: AmiMessage) -> bool:
    return (message.get("response") or "").lower() not in ("success", "follows", "goodbye")


class AmiSession:
    """One AMI connection kept open; the box's call count from its events.

    :meth:`run` connects, logs in with ``Events: call``, reads the Asterisk
    version (``CoreSettings``), lists the channels (``CoreShowChannels``),
    then follows ``Newchannel``/``Hangup`` events and lists again every
    ``resync_interval`` seconds. It reconnects with backoff (0.5 s to 10 s)
    and never raises for runtime trouble: :attr:`calls` is None and
    :attr:`error` says why while the count is unknown.

    During a graceful stop Asterisk refuses the resync but keeps sending
    events: the count goes on from events (:attr:`shutting_down` is set).
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        resync_interval: float = 10.0,
        timeout: float = 3.0,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.resync_interval = resync_interval
        self.timeout = timeout
        self.calls: int | None = None
        self.error: str | None = "not connected yet"
        self.version: str | None = None
        self.shutting_down = False
        self.changed = asyncio.Event()  # set on every change of count or error
        self._channels: dict[str, str] = {}  # Uniqueid -> Linkedid
        self._ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None
        self._answers: dict[str, asyncio.Future[AmiMessage]] = {}
        self._lists: dict[str, list[AmiMessage]] = {}
        self._list_done: dict[str, asyncio.Future[list[AmiMessage]]] = {}

    def __repr__(self) -> str:
        # Never show the secret.
        return f"AmiSession({self.username}@{self.host}:{self.port})"

    @property
    def where(self) -> str:
        return f"AMI at {self.host}:{self.port}"

    # -- state -----------------------------------------------------------

    def _set(self, calls: int | None, error: str | None) -> None:
        if calls != self.calls or error != self.error:
            self.calls, self.error = calls, error
            self.changed.set()

    def _recount(self) -> None:
        self._set(len(set(self._channels.values())), None)

    def _on_event(self, event: AmiMessage) -> None:
        name = (event.get("event") or "").lower()
        uid = event.get("uniqueid")
        if name == "newchannel" and uid:
            self._channels[uid] = event.get("linkedid") or uid
            self._recount()
        elif name == "hangup" and uid:
            self._channels.pop(uid, None)
            self._recount()
        elif name == "shutdown":
            self.shutting_down = True

    # -- the connection --------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep a session open until ``stopping`` is set."""
        backoff = 0.5
        while not stopping.is_set():
            try:
                await self._session(stopping)
                backoff = 0.5
            except TimeoutError:
                self._set(None, f"{self.where} did not answer in {self.timeout:g}s")
            except (OSError, AmiError, UnicodeError) as exc:
                self._set(None, f"{self.where}: {_describe(exc)}")
            finally:
                self._close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), backoff)
            backoff = min(backoff * 2, 10.0)

    def _close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        futures: list[asyncio.Future[Any]] = [*self._answers.values(), *self._list_done.values()]
        for fut in futures:
            if not fut.done():
                fut.set_exception(AmiError("connection closed by Asterisk"))
        self._answers.clear()
        self._list_done.clear()
        self._lists.clear()

    async def _session(self, stopping: asyncio.Event) -> None:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._writer = writer
            banner = await reader.readline()
        if not banner.startswith(b"Asterisk Call Manager"):
            raise AmiError(f"not an AMI server (banner {banner[:60]!r})")
        reading = asyncio.create_task(self._read(reader))
        try:
            # A failed login is answered after 1 s: allow for it.
            login = await self.request(
                "Login",
                [("Username", self.username), ("Secret", self._secret), ("Events", "call")],
                timeout=self.timeout + 1.0,
            )
            if _is_error(login):
                raise AmiError(f"login refused: {login.get('message') or 'no reason given'}")
            self.shutting_down = False
            settings = await self.request("CoreSettings")
            version = None if _is_error(settings) else settings.get("asteriskversion")
            while not stopping.is_set() and not reading.done():
                await self.resync()
                # Only once the count is known: a record never says "22.x,
                # not connected yet" (a probe between the two wrote that).
                self.version = version or self.version
                waiters = {reading, asyncio.create_task(_wait(stopping))}
                _, pending = await asyncio.wait(
                    waiters, timeout=self.resync_interval, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending - {reading}:
                    task.cancel()
            if reading.done():
                reading.result()  # raises the reader's error, if any
                raise AmiError("connection closed by Asterisk")
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading

    async def resync(self) -> None:
        """Replace the channel map with ``CoreShowChannels``' answer."""
        try:
            events = await self.request_list("CoreShowChannels")
        except AmiError as exc:
            if SHUTTING_DOWN.lower() in str(exc).lower() and self.calls is not None:
                # Graceful stop: actions are refused, events still come.
                self.shutting_down = True
                return
            raise
        channels: dict[str, str] = {}
        for event in events:
            if (event.get("event") or "").lower() == "coreshowchannel":
                uid = event.get("uniqueid") or f"<{len(channels)}>"
                channels[uid] = event.get("linkedid") or uid
        self._channels = channels
        self._recount()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = ""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise AmiError("connection closed by Asterisk")
            buffer += chunk.decode("utf-8", errors="replace")
            if len(buffer) > _AMI_MAX_BUFFER:
                raise AmiError("answer too large")
            messages, buffer = split_ami_messages(buffer)
            for message in messages:
                self._dispatch(message)

    def _dispatch(self, message: AmiMessage) -> None:
        action_id = message.get("actionid") or ""
        if message.get("response") is not None:
            if action_id in self._list_done:
                if _is_error(message):
                    fut = self._list_done.pop(action_id)
                    self._lists.pop(action_id, None)
                    if not fut.done():
                        fut.set_exception(AmiError(message.get("message") or "refused"))
                return
            fut_answer = self._answers.pop(action_id, None)
            if fut_answer is not None and not fut_answer.done():
                fut_answer.set_result(message)
            return
        if action_id in self._lists:
            if (message.get("eventlist") or "").lower() == "complete":
                events = self._lists.pop(action_id)
                done = self._list_done.pop(action_id)
                if not done.done():
                    done.set_result(events)
            else:
                self._lists[action_id].append(message)
            return
        if message.get("event") is not None:
            self._on_event(message)

    def _send(self, action: str, action_id: str, fields: list[tuple[str, str]]) -> None:
        if self._writer is None:
            raise AmiError("not connected")
        self._writer.write(encode_action(action, [("ActionID", action_id), *fields]))

    async def request(
        self, action: str, fields: list[tuple[str, str]] | None = None, timeout: float | None = None
    ) -> AmiMessage:
        """Send an action; its response (an error response is returned, not raised)."""
        action_id = f"af-{next(self._ids)}"
        fut: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._answers[action_id] = fut
        try:
            self._send(action, action_id, fields or [])
            async with asyncio.timeout(timeout or self.timeout):
                return await fut
        finally:
            self._answers.pop(action_id, None)

    async def request_list(self, action: str) -> list[AmiMessage]:
        """Send a list action; its events up to the ``…Complete`` one.
        AmiError with Asterisk's message when it is refused."""
        action_id = f"af-{next(self._ids)}"
        done: asyncio.Future[list[AmiMessage]] = asyncio.get_running_loop().create_future()
        self._lists[action_id] = []
        self._list_done[action_id] = done
        try:
            self._send(action, action_id, [])
            async with asyncio.timeout(self.timeout):
                return await done
        finally:
            self._lists.pop(action_id, None)
            self._list_done.pop(action_id, None)

    async def command(self, cli: str) -> tuple[bool, list[str]]:
        """Run an Asterisk CLI command (needs ``write=command``): whether it
        was accepted, and its output lines or the refusal."""
        answer = await self.request("Command", [("Command", cli)])
        if _is_error(answer):
            return False, [answer.get("message") or "refused"]
        return True, list(answer.outputs)


async def _wait(event: asyncio.Event) -> None:
    await event.wait()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is Asterisk running, with manager.conf enabled?)"
    return str(exc) or type(exc).__name__
