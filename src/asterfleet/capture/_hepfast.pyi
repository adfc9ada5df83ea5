"""Types of the compiled fast path (``_hepfast.pyx``)."""

from typing import Any

#: The PostgreSQL binary COPY signature (header, flags, extension length).
SIGNATURE: bytes
#: The end-of-data marker of a binary COPY.
TRAILER: bytes
#: The reject reasons this path decides (a subset of ``hep.REASONS``).
REASON_NAMES: tuple[str, ...]

def frame_end(buf: bytes | bytearray, start: int = 0) -> tuple[int, int, str | None]:
    """``(end, count, error)`` of a TCP stream buffer: the ``count`` whole
    HEP packets from ``start`` on end at ``end``; ``error`` (``bad_magic``
    or ``bad_length``) when the stream stops being HEP v3 at ``end``."""

def parse_packets(
    packets: list[bytes], auth_key: bytes | None, now_us: int, binary: bool, framed: bool = False
) -> tuple[bytes, list[tuple[Any, ...]], int, set[int], list[bytes], dict[str, int]]:
    """Parse a batch of HEP packets as ``collector.packet_to_row`` does.

    Returns ``(copy, rows, stored, days, left, rejected)``: with ``binary``,
    ``copy`` holds the binary COPY tuples of the ``stored`` SIP rows (no
    signature, no trailer) and ``rows`` is empty; without, ``rows`` holds
    them as tuples in ``store.COLUMNS`` order and ``copy`` is empty.
    ``days`` are their UTC days (µs // day), ``left`` the packets for the
    Python path (RTCP, compressed, non-ASCII text, …) and ``rejected`` the
    others counted by reason. With ``framed``, each item is a chunk of
    consecutive whole packets (as :func:`frame_end` cut them).
    """

class DatagramReceiver:
    """Reads up to ``batch`` UDP datagrams per system call (``recvmmsg``)."""

    def __init__(self, fd: int, batch: int = 256, size: int = 65535) -> None: ...
    def receive(self) -> tuple[bytes, int, list[bytes]]:
        """The datagrams waiting now (possibly none; never blocks):
        ``(chunk, count, odd)``: the ``count`` datagrams whose HEP header
        gives their own length, back to back in ``chunk`` (framed as a TCP
        stream is), and the ``odd`` others one by one."""
