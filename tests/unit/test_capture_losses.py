"""The kernel's per-socket UDP drop counter, as /proc/net/udp shows it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import structlog.testing

from asterfleet.capture.collector import (
    Collector,
    CollectorSettings,
    read_kernel_udp_drops,
    udp_socket_drops,
)

HEADER = (
    "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
    "   uid  timeout inode ref pointer drops\n"
)


def _row(sl: int, inode: int, drops: int) -> str:
    return (
        f"  {sl}: 0100007F:2364 00000000:0000 07 00000000:00000000 00:00000000 00000000"
        f"     0        0 {inode} 2 0000000000000000 {drops}\n"
    )


@pytest.mark.parametrize(
    ("text", "inodes", "expected"),
    [
        # our socket among others: only ours counts
        (HEADER + _row(0, 111, 5) + _row(1, 222, 9), [222], {222: 9}),
        # two of our sockets (udp: and a second udp: listener)
        (HEADER + _row(0, 111, 5) + _row(1, 222, 9), [111, 222], {111: 5, 222: 9}),
        # socket gone (closed): nothing rather than a wrong number
        (HEADER + _row(0, 111, 5), [333], {}),
        # empty file, or a kernel whose header has no drops column
        ("", [1], {}),
        ("sl local_address inode\n 0: x 1\n", [1], {}),
        # a torn last line is skipped
        (HEADER + _row(0, 111, 5) + "  1: 0100007F", [111], {111: 5}),
    ],
)
def test_udp_socket_drops(text: str, inodes: list[int], expected: dict[int, int]) -> None:
    assert udp_socket_drops(text, inodes) == expected


def test_a_real_socket_is_found_with_zero_drops() -> None:
    import os

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        inode = os.fstat(sock.fileno()).st_ino
        text = Path("/proc/net/udp").read_text()
        assert udp_socket_drops(text, [inode]) == {inode: 0}
        assert read_kernel_udp_drops([inode]) == 0


def test_pause_and_resume_are_logged_once_per_interval_with_the_count(tmp_path: Path) -> None:
    settings = CollectorSettings(listen=[], db_url=str(tmp_path / "c.db"), loss_log_interval=60)
    collector = Collector(settings)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):  # sustained overload: the queue fills and drains again and again
            collector.counters.queued = settings.queue_rows
            collector._pause_tcp()
            collector.counters.queued = 0
            collector._maybe_resume_tcp()
    events = [(e["event"], e.get("pauses")) for e in logs]
    assert events == [("tcp_paused", 1), ("tcp_resumed", None)]
    assert collector.counters.tcp_pauses == 5
