"""Parsing SIPp's -trace_stat CSV, and the runner's command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.errors import UsageError
from asterfleet.sipp.runner import SippUac, SippUas, scenario_path
from asterfleet.sipp.stats import SippError, parse_stat_csv, read_stat_file

# The column layout SIPp 3.6.1 writes (abridged at the end: response-time and
# call-length columns are not counters).
COLUMNS = [
    "StartTime", "LastResetTime", "CurrentTime", "ElapsedTime(P)", "ElapsedTime(C)",
    "TargetRate", "CallRate(P)", "CallRate(C)", "IncomingCall(P)", "IncomingCall(C)",
    "OutgoingCall(P)", "OutgoingCall(C)", "TotalCallCreated", "CurrentCall",
    "SuccessfulCall(P)", "SuccessfulCall(C)", "FailedCall(P)", "FailedCall(C)",
    "FailedCannotSendMessage(P)", "FailedCannotSendMessage(C)",
    "FailedMaxUDPRetrans(P)", "FailedMaxUDPRetrans(C)",
    "FailedUnexpectedMessage(P)", "FailedUnexpectedMessage(C)",
    "FailedCallRejected(P)", "FailedCallRejected(C)",
    "FailedTimeoutOnRecv(P)", "FailedTimeoutOnRecv(C)",
    "OutOfCallMsgs(P)", "OutOfCallMsgs(C)", "DeadCallMsgs(P)", "DeadCallMsgs(C)",
    "Retransmissions(P)", "Retransmissions(C)", "AutoAnswered(P)", "AutoAnswered(C)",
    "ResponseTime1(P)", "ResponseTime1(C)", "CallLength(P)", "CallLength(C)",
]  # fmt: skip
STAMP = "2026-01-02\t10:00:00.000001\t1767348000.000001"


def row(**values: int) -> str:
    fields = []
    for name in COLUMNS:
        if name in ("StartTime", "LastResetTime", "CurrentTime"):
            fields.append(STAMP)
        elif name.startswith(("ElapsedTime", "ResponseTime", "CallLength")):
            fields.append("00:00:01:000000")
        elif name == "CallRate(C)":
            fields.append("6.64452")
        else:
            fields.append(str(values.get(name.replace("(", "_").replace(")", ""), 0)))
    return ";".join(fields) + ";"


HEADER = ";".join(COLUMNS) + ";"


def csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


def test_latest_row_wins() -> None:
    text = csv(
        row(),
        row(TotalCallCreated=5, CurrentCall=5, OutgoingCall_C=5),
        row(
            TotalCallCreated=20, CurrentCall=3, SuccessfulCall_C=15, FailedCall_C=2,
            FailedTimeoutOnRecv_C=2, OutgoingCall_C=20, Retransmissions_C=4,
            AutoAnswered_C=1, DeadCallMsgs_C=6, OutOfCallMsgs_C=7,
        ),
    )  # fmt: skip
    stats = parse_stat_csv(text)
    assert stats.current_calls == 3
    assert stats.successful_calls == 15
    assert stats.failed_calls == 2
    assert stats.total_calls_created == 20
    assert stats.outgoing_calls == 20 and stats.incoming_calls == 0
    assert stats.retransmissions == 4 and stats.auto_answered == 1
    assert stats.dead_call_msgs == 6 and stats.out_of_call_msgs == 7
    assert stats.failures["TimeoutOnRecv"] == 2
    assert stats.failures["UnexpectedMessage"] == 0
    assert "Call" not in stats.failures  # FailedCall is the total, not a cause
    assert set(stats.failures) == {
        "CannotSendMessage", "MaxUDPRetrans", "UnexpectedMessage", "CallRejected",
        "TimeoutOnRecv",
    }  # fmt: skip
    assert stats.raw["StartTime"] == STAMP


def test_periodic_columns_are_not_used() -> None:
    stats = parse_stat_csv(csv(row(SuccessfulCall_P=1, SuccessfulCall_C=9, FailedCall_P=4)))
    assert stats.successful_calls == 9
    assert stats.failed_calls == 0


def test_cut_short_last_row_is_skipped() -> None:
    full = row(TotalCallCreated=7, CurrentCall=2, SuccessfulCall_C=5)
    partial = row(TotalCallCreated=9, CurrentCall=1)[:40]
    stats = parse_stat_csv(csv(full, partial))
    assert stats.total_calls_created == 7


def test_crlf_and_blank_lines() -> None:
    text = csv(row(CurrentCall=4, TotalCallCreated=4)).replace("\n", "\r\n") + "\r\n\r\n"
    assert parse_stat_csv(text).current_calls == 4


def test_columns_found_by_name_not_position() -> None:
    header = "CurrentCall;TotalCallCreated;FailedCall(C);SuccessfulCall(C);FailedTcpClosed(C);"
    stats = parse_stat_csv(f"{header}\n2;10;1;7;1;\n")
    assert (stats.current_calls, stats.total_calls_created) == (2, 10)
    assert (stats.failed_calls, stats.successful_calls) == (1, 7)
    assert stats.failures == {"TcpClosed": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("a;b;c\n1;2;3\n", "no header"),
        (HEADER + "\n", "no complete data row"),
        (HEADER + "\n" + row()[:30] + "\n", "no complete data row"),
        ("CurrentCall;TotalCallCreated;\nx;1;\n", "no complete data row"),
    ],
)
def test_unusable_files(text: str, message: str) -> None:
    with pytest.raises(SippError, match=message):
        parse_stat_csv(text)


def test_missing_required_column() -> None:
    with pytest.raises(SippError, match="no complete data row"):
        parse_stat_csv("CurrentCall;TotalCallCreated;\n1;2;\n")


def test_read_stat_file_reads_header_and_tail(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    rows = [row(TotalCallCreated=i, CurrentCall=i % 7) for i in range(2000)]
    path.write_text(csv(*rows))
    assert path.stat().st_size > 64 * 1024
    stats = read_stat_file(path)
    assert stats.total_calls_created == 1999
    assert stats.current_calls == 1999 % 7


def test_read_stat_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SippError, match="cannot read"):
        read_stat_file(tmp_path / "nope.csv")


# --------------------------------------------------------------------------
# Runner command lines (no process started)
# --------------------------------------------------------------------------


def test_scenarios_are_packaged(tmp_path: Path) -> None:
    for name in ("uas.xml", "uas_401.xml", "uas_503.xml", "uac.xml"):
        text = scenario_path(name, tmp_path).read_text()
        assert text.lstrip().startswith("<?xml")
    uas = scenario_path("uas.xml", tmp_path).read_text()
    first = uas.index("<recv")
    assert uas[first:].startswith('<recv request="OPTIONS" optional="true" next="options"/>')
    assert "[last_Record-Route:]" in uas
    uac = scenario_path("uac.xml", tmp_path).read_text()
    assert 'rrs="true"' in uac and "[routes]" in uac and "[next_url]" in uac
    with pytest.raises(UsageError, match="unknown SIPp scenario"):
        scenario_path("../../etc/passwd", tmp_path)


def test_uas_command_line(tmp_path: Path) -> None:
    uas = SippUas(tmp_path, 5090, control_port=8890, name="box1")
    argv = uas.argv()
    assert argv[0].endswith("sipp")
    joined = " ".join(argv[1:])
    assert f"-sf {scenario_path('uas.xml', tmp_path)}" in joined
    assert "-i 127.0.0.1 -p 5090 -t u1 -cp 8890 -nostdin -aa" in joined
    assert f"-trace_stat -stf {tmp_path / 'box1.csv'} -fd 1" in joined
    assert uas.sip_uri == "sip:127.0.0.1:5090;transport=udp"
    assert (
        SippUas(tmp_path, 5090, transport="tcp").argv()[
            SippUas(tmp_path, 5090, transport="tcp").argv().index("-t") + 1
        ]
        == "t1"
    )


def test_uac_command_line(tmp_path: Path) -> None:
    uac = SippUac(
        tmp_path, "127.0.0.1", 5060, rate=2.5, hold_ms=3000, max_calls=20,
        port=5070, control_port=8891, service="1000", max_open_calls=50,
    )  # fmt: skip
    argv = uac.argv()
    assert argv[1] == "127.0.0.1:5060"
    joined = " ".join(argv[1:])
    assert "-s 1000 -r 2.5 -rp 1000 -d 3000 -recv_timeout 10000 -trace_counts -m 20 -l 50" in joined
    assert "-p 5070 -t u1 -cp 8891 -nostdin" in joined
    ipv6 = SippUac(tmp_path, "::1", 5060, host="::1", port=1, control_port=2)
    assert ipv6.argv()[1] == "[::1]:5060"
    assert "-m" not in ipv6.argv()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "rate"),
        ({"hold_ms": -1}, "hold"),
        ({"max_calls": 0}, "max_calls"),
        ({"service": "a b"}, "service"),
        ({"transport": "ws"}, "transport"),
        ({"stat_interval": 0}, "stat_interval"),
    ],
)
def test_uac_rejects_bad_settings(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SippUac(tmp_path, "127.0.0.1", 5060, **kwargs)  # type: ignore[arg-type]
