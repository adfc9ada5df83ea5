"""The watcher's IRC connection: joins its channel, says what happened, and
hands the channel's lines to a handler (commands). Reconnects until stopped.
"""

from __future__ import annotations

import collections
import socket
import ssl
import threading
from collections.abc import Callable

from asterfleet import logs
from asterfleet.releases.config import Irc
from asterfleet.releases.ircproto import parse_line, privmsg

Handler = Callable[[str, str], "str | None"]  # (nick, text) -> reply


class IrcBot:
    def __init__(self, irc: Irc, handler: Handler, stop: threading.Event) -> None:
        self.irc = irc
        self.handler = handler
        self.stop = stop
        self.joined = threading.Event()
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._pending: collections.deque[str] = collections.deque(maxlen=20)
        self.thread = threading.Thread(target=self._run, name="irc", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def say(self, text: str) -> None:
        """Tell the channel (kept for when it has joined, if it has not yet)."""
        if not self.joined.is_set():
            self._pending.append(text)
            return
        self._send(privmsg(self.irc.channel, text))

    def _send(self, line: str) -> None:
        with self._send_lock:
            if self._sock is not None:
                try:
                    self._sock.sendall(line.encode())
                except OSError as exc:
                    logs.get("asterfleet.releases").warning("irc_send_failed", error=str(exc))

    def _run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                self._session()
                backoff = 1.0
            except (OSError, ssl.SSLError) as exc:
                logs.get("asterfleet.releases").warning(
                    "irc_disconnected", server=self.irc.server, error=str(exc)
                )
            except Exception:  # never let the channel take the watcher down
                logs.get("asterfleet.releases").exception("irc_crashed", server=self.irc.server)
            self.joined.clear()
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 60.0)

    def _session(self) -> None:
        host, port = self.irc.address()
        raw = socket.create_connection((host, port), timeout=10)
        sock: socket.socket = (
            ssl.create_default_context().wrap_socket(raw, server_hostname=host)
            if self.irc.tls
            else raw
        )
        sock.settimeout(1.0)
        with self._send_lock:
            self._sock = sock
        nick = self.irc.nick
        try:
            self._send(f"NICK {nick}\r\nUSER {nick} 0 * :asterfleet release watcher\r\n")
            buffer = b""
            while not self.stop.is_set():
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    nick = self._on(line.decode(errors="replace"), nick)
            self._send("QUIT :stopping\r\n")
        finally:
            with self._send_lock:
                self._sock = None
            sock.close()

    def _on(self, line: str, nick: str) -> str:
        msg = parse_line(line)
        if msg is None:
            return nick
        if msg.command == "PING":
            self._send(f"PONG :{msg.params[-1] if msg.params else ''}\r\n")
        elif msg.command == "433":  # nick in use
            nick += "_"
            self._send(f"NICK {nick}\r\n")
        elif msg.command == "001":
            self._send(f"JOIN {self.irc.channel}\r\n")
        elif msg.command == "JOIN" and msg.nick == nick:
            self.joined.set()
            logs.get("asterfleet.releases").info("irc_joined", channel=self.irc.channel)
            while self._pending:
                self._send(privmsg(self.irc.channel, self._pending.popleft()))
        elif (
            msg.command == "PRIVMSG"
            and len(msg.params) == 2
            and msg.params[0].lower() == self.irc.channel.lower()
        ):
            sender, text = msg.nick, msg.params[1]
            # A command may take a while (a check, a build): PINGs are still answered.
            threading.Thread(target=self._answer, args=(sender, text), daemon=True).start()
        return nick

    def _answer(self, sender: str, text: str) -> None:
        try:
            reply = self.handler(sender, text)
        except Exception:
            logs.get("asterfleet.releases").exception("irc_command_crashed", text=text)
            reply = f"{sender}: that failed; see the watcher's log"
        if reply:
            self.say(reply)
