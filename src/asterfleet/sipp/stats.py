"""SIPp's statistics file (``-trace_stat``): its format, read back.

Apart from the runner so the node agent's SIPp call counter reads the file
without importing the code that starts SIPp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from asterfleet.errors import AsterfleetError

_TAIL_BYTES = 64 * 1024


class SippError(AsterfleetError):
    """SIPp failed to start, or its statistics cannot be read."""


# --------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SippStats:
    """The latest row of a SIPp statistics CSV (cumulative values).

    ``failures`` maps each ``Failed*`` cause (without the ``Failed`` prefix,
    e.g. ``TimeoutOnRecv``, ``UnexpectedMessage``, ``MaxUDPRetrans``) to its
    cumulative count. ``raw`` keeps every column of the row as text.
    On a UAS every answered OPTIONS probe counts as a call (created and
    successful): SIPp sees each new Call-ID as a call.
    """

    current_calls: int
    successful_calls: int
    failed_calls: int
    total_calls_created: int
    incoming_calls: int = 0
    outgoing_calls: int = 0
    retransmissions: int = 0
    out_of_call_msgs: int = 0
    dead_call_msgs: int = 0
    auto_answered: int = 0
    failures: Mapping[str, int] = field(default_factory=dict)
    raw: Mapping[str, str] = field(default_factory=dict)


def _int_field(row: Mapping[str, str], name: str, required: bool) -> int:
    value = row.get(name)
    if value is None or value.strip() == "":
        if required:
            raise SippError(f"SIPp statistics have no {name!r} column")
        return 0
    try:
        return int(float(value.strip()))
    except ValueError:
        raise SippError(f"SIPp statistics column {name!r} is not a number: {value!r}") from None


def parse_stat_csv(text: str) -> SippStats:
    """Parse SIPp's ``-trace_stat`` CSV and return its latest complete row.

    The file is ``;``-separated: a header row, then one row per dump period.
    Most counters come as a periodic ``(P)`` and a cumulative ``(C)`` column;
    the cumulative ones are used. A last row cut short by a concurrent write
    is skipped. Raises :class:`SippError` when there is no usable row.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SippError("SIPp statistics file is empty")
    header = [name.strip() for name in lines[0].split(";")]
    if "CurrentCall" not in header:
        raise SippError("SIPp statistics file has no header row (no 'CurrentCall' column)")
    for line in reversed(lines[1:]):
        values = line.split(";")
        if len(values) != len(header) or values[0].strip() == header[0]:
            continue
        row = {name: value for name, value in zip(header, values, strict=True) if name}
        try:
            return _stats_from_row(row)
        except SippError:
            continue
    raise SippError("SIPp statistics file has no complete data row yet")


def _stats_from_row(row: Mapping[str, str]) -> SippStats:
    failures = {
        name[len("Failed") : -len("(C)")]: _int_field(row, name, True)
        for name in row
        if name.startswith("Failed") and name.endswith("(C)") and name != "FailedCall(C)"
    }
    return SippStats(
        current_calls=_int_field(row, "CurrentCall", True),
        successful_calls=_int_field(row, "SuccessfulCall(C)", True),
        failed_calls=_int_field(row, "FailedCall(C)", True),
        total_calls_created=_int_field(row, "TotalCallCreated", True),
        incoming_calls=_int_field(row, "IncomingCall(C)", False),
        outgoing_calls=_int_field(row, "OutgoingCall(C)", False),
        retransmissions=_int_field(row, "Retransmissions(C)", False),
        out_of_call_msgs=_int_field(row, "OutOfCallMsgs(C)", False),
        dead_call_msgs=_int_field(row, "DeadCallMsgs(C)", False),
        auto_answered=_int_field(row, "AutoAnswered(C)", False),
        failures=failures,
        raw=dict(row),
    )


def read_stat_file(path: Path) -> SippStats:
    """The latest row of a statistics file, reading only its header and tail."""
    try:
        with open(path, "rb") as f:
            header = f.readline()
            f.seek(0, 2)
            size = f.tell()
            start = max(len(header), size - _TAIL_BYTES)
            f.seek(start)
            tail = f.read()
    except OSError as exc:
        raise SippError(f"cannot read SIPp statistics {path}: {exc.strerror or exc}") from None
    if start > len(header):
        # Drop the partial first line of the tail.
        tail = tail.split(b"\n", 1)[1] if b"\n" in tail else b""
    return parse_stat_csv((header + tail).decode("utf-8", errors="replace"))
