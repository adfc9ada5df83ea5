"""An AMI server on loopback that behaves like Asterisk 22.10.1 as observed:

* banner ``Asterisk Call Manager/9.0.0``; actions answered by ActionID;
* a failed login is answered after 1 s (``Authentication failed``), then
  the connection is closed;
* during ``core stop gracefully`` every action, a new Login included, is
  answered ``Asterisk is shutting down``, while open sessions keep
  receiving events;
* ``CoreShowChannels`` and ``CoreSettings`` need ``write=reporting`` (or
  system), ``Command`` needs ``write=command``; events need ``read=call``
  and are sent to sessions that logged in with an event mask including it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

VERSION = "22.10.1"


@dataclass
class AmiUser:
    secret: str
    read: set[str] = field(default_factory=lambda: {"call"})
    write: set[str] = field(default_factory=lambda: {"reporting"})


@dataclass
class _Session:
    writer: asyncio.StreamWriter
    user: AmiUser | None = None
    events: bool = False


class FakeAmi:
    def __init__(self, users: dict[str, AmiUser]) -> None:
        self.users = users
        self.channels: dict[str, str] = {}  # uniqueid -> linkedid
        self.shutting_down = False
        self.logins = 0  # Login actions received
        self.actions: list[str] = []
        self.commands: list[str] = []
        self.sessions: list[_Session] = []
        self.server: asyncio.Server | None = None
        self._next = 1

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> FakeAmi:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    def drop_all(self) -> None:
        """Close every session (Asterisk restarted, or a network cut)."""
        for s in self.sessions:
            s.writer.close()
        self.sessions.clear()

    # -- calls -------------------------------------------------------------

    def _emit(self, text: str) -> None:
        for s in self.sessions:
            if s.user is not None and s.events and "call" in s.user.read:
                s.writer.write(text.encode())

    def add_call(self, legs: int = 2) -> str:
        """A call with ``legs`` channels sharing one Linkedid."""
        linked = f"1700000000.{self._next}"
        for leg in range(legs):
            uid = f"1700000000.{self._next}"
            self._next += 1
            self.channels[uid] = linked
            self._emit(
                f"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/lb-{uid}\r\n"
                f"Uniqueid: {uid}\r\nLinkedid: {linked}\r\nChannelState: {leg}\r\n\r\n"
            )
        return linked

    def hangup(self, linked: str) -> None:
        for uid in [u for u, ln in self.channels.items() if ln == linked]:
            del self.channels[uid]
            self._emit(
                f"Event: Hangup\r\nPrivilege: call,all\r\nUniqueid: {uid}\r\n"
                f"Linkedid: {linked}\r\nCause: 16\r\n\r\n"
            )

    def calls(self) -> int:
        return len(set(self.channels.values()))

    # -- protocol ------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self.sessions.append(session)
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
                    action = dict(line.split(": ", 1) for line in block.split("\r\n") if line)
                    keep = await self._answer(session, action)
                    await writer.drain()
                    if not keep:
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
            writer.close()

    async def _answer(self, s: _Session, action: dict[str, str]) -> bool:
        name = action.get("Action", "")
        aid = action.get("ActionID", "")
        self.actions.append(name)

        def reply(text: str) -> None:
            s.writer.write(f"{text}ActionID: {aid}\r\n\r\n".encode())

        def error(message: str) -> None:
            reply(f"Response: Error\r\nMessage: {message}\r\n")

        if self.shutting_down:
            error("Asterisk is shutting down")
            return True
        if name == "Login":
            self.logins += 1
            user = self.users.get(action.get("Username", ""))
            if user is None or user.secret != action.get("Secret"):
                await asyncio.sleep(1)  # Asterisk delays a failed login by 1 s
                error("Authentication failed")
                return False
            s.user = user
            s.events = action.get("Events", "on").lower() not in ("off", "")
            reply("Response: Success\r\nMessage: Authentication accepted\r\n")
            return True
        if s.user is None:
            error("Permission denied")
            return True
        if name == "Logoff":
            reply("Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n")
            return False
        if name in ("CoreSettings", "CoreShowChannels"):
            if not s.user.write & {"reporting", "system"}:
                error("Permission denied")
                return True
            if name == "CoreSettings":
                reply(f"Response: Success\r\nAMIversion: 9.0.0\r\nAsteriskVersion: {VERSION}\r\n")
                return True
            reply("Response: Success\r\nEventList: start\r\nMessage: Channels will follow\r\n")
            for uid, linked in self.channels.items():
                s.writer.write(
                    f"Event: CoreShowChannel\r\nActionID: {aid}\r\nChannel: PJSIP/lb-{uid}\r\n"
                    f"Uniqueid: {uid}\r\nLinkedid: {linked}\r\n\r\n".encode()
                )
            reply(
                "Event: CoreShowChannelsComplete\r\nEventList: Complete\r\n"
                f"ListItems: {len(self.channels)}\r\n"
            )
            return True
        if name == "Command":
            if "command" not in s.user.write:
                error("Permission denied")
                return True
            cli = action.get("Command", "")
            self.commands.append(cli)
            if cli == "core stop gracefully":
                self.shutting_down = True
            out = (
                f"Output: Asterisk {VERSION} built by asterfleet\r\n"
                if cli == "core show version"
                else ""
            )
            reply(f"Response: Success\r\nMessage: Command output follows\r\n{out}")
            return True
        error("Invalid/unknown command")
        return True
