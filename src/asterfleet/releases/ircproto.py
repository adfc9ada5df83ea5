"""The few pieces of the IRC protocol (RFC 1459/2812) the watcher speaks. Pure."""

from __future__ import annotations

from dataclasses import dataclass

MAX_TEXT = 400  # keeps a PRIVMSG line under the 512-byte limit


@dataclass(frozen=True)
class Message:
    prefix: str
    command: str
    params: tuple[str, ...]

    @property
    def nick(self) -> str:
        """The sender's nick (``alice`` of ``alice!u@host``)."""
        return self.prefix.split("!", 1)[0]


def parse_line(line: str) -> Message | None:
    """One line from the server, without its CR LF; None when empty."""
    line = line.rstrip("\r\n")
    if not line:
        return None
    prefix = ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    head, sep, trailing = line.partition(" :")
    words = head.split()
    if not words:
        return None
    params = [*words[1:], trailing] if sep else words[1:]
    return Message(prefix, words[0].upper(), tuple(params))


def privmsg(target: str, text: str) -> str:
    """A PRIVMSG line (CR LF included): one line, cut to a safe length."""
    flat = " ".join(text.split())
    if len(flat) > MAX_TEXT:
        flat = flat[: MAX_TEXT - 1] + "…"
    return f"PRIVMSG {target} :{flat}\r\n"
