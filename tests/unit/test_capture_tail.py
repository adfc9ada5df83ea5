"""The live tail's position on PostgreSQL: the transactions it is done
with, moved on after each poll (``advance``), and read back exactly as it
was written, or refused."""

from __future__ import annotations

import pytest

from asterfleet.capture.tail import Position, Snapshot, advance

T = 1_796_000_000_000_000
P = Position(T, Snapshot(110, (100, 105)))  # 100 and 105 were running


@pytest.mark.parametrize(
    ("prev", "now", "stop", "stop_id", "expected"),
    [
        # Every batch it saw was sent: the new snapshot, taken now.
        (P, Snapshot(130, (120,)), None, None, Position(T + 1, Snapshot(130, (120,)))),
        # Stopped after 100 (sent whole): 105 still pending (it still runs),
        # as is all from 110 on.
        (P, Snapshot(130, (105, 120)), 100, None, Position(T, Snapshot(110, (105,)))),
        # Stopped part way through 105: pending, its openings up to id 5000 sent.
        (P, Snapshot(130, ()), 105, 5000, Position(T, Snapshot(110, (105,)), ((105, 5000),))),
        # Stopped after 112 (a batch from after the old snapshot): all up to
        # it done but what still runs (111); the old running ones are done.
        (P, Snapshot(130, (111, 120)), 112, None, Position(T, Snapshot(113, (111,)))),
        # Part way through 112: 112 pending with its progress.
        (
            P,
            Snapshot(130, (111,)),
            112,
            7,
            Position(T, Snapshot(113, (111, 112)), ((112, 7),)),
        ),
        # Progress kept for a batch above the stop, dropped for one below
        # (it was sent whole this time), replaced for the stop itself.
        (
            Position(T, Snapshot(110, (100, 105, 107)), ((100, 40), (107, 70))),
            Snapshot(130, ()),
            105,
            90,
            Position(T, Snapshot(110, (105, 107)), ((105, 90), (107, 70))),
        ),
        (
            Position(T, Snapshot(110, (105,)), ((105, 40),)),
            Snapshot(130, ()),
            105,
            None,
            Position(T, Snapshot(110, ())),
        ),
    ],
)
def test_a_poll_moves_the_position_on(
    prev: Position, now: Snapshot, stop: int | None, stop_id: int | None, expected: Position
) -> None:
    assert advance(prev, now, T + 1, stop, stop_id) == expected


@pytest.mark.parametrize(
    "position",
    [
        Position(T, Snapshot(731)),
        Position(T, Snapshot(9_000_000_000, (4_294_967_296, 8_999_999_999))),
        Position(T, Snapshot(110, (100, 105)), ((105, 12),)),
    ],
)
def test_a_position_reads_back_as_written(position: Position) -> None:
    assert Position.decode(position.encode()) == position


@pytest.mark.parametrize(
    "text",
    [
        "",
        "42",  # SQLite's kind
        "garbage",
        "1:2:3",  # three fields
        f"{T}:110:120:",  # running above xmax
        f"{T}:110:105,100:",  # not sorted
        f"{T}:110:100,100:",  # twice
        f"{T}:110:100:105.3",  # progress of one not pending
        f"{T}:110:100:100.3,100.4",  # twice
        f"{T}:110:100:100",  # not a pair
        f"{T}:-110::",
        f"{T}:1e9::",
        f"{T}:110:١٠٠:",  # digits, but not ASCII
        f"{T}:110::" + "9" * 30,
        f"{T}:99999999999999999999::",  # beyond an xid8
        f"{T}:" + "1," * 10_000 + ":",
    ],
)
def test_a_position_not_given_by_the_tail_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Position.decode(text)


def test_a_postgresql_snapshot_is_read() -> None:
    assert Snapshot.parse("100:110:100,105") == Snapshot(110, (100, 105))
    assert Snapshot.parse("731:731:") == Snapshot(731)
    with pytest.raises(ValueError):
        Snapshot.parse("99:110:100")
