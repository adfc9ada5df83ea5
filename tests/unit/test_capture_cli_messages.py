"""`capture search --messages` lists single messages; a filter that only
calls have (duration, answer class, MOS, …) is refused in one line, exit 2,
instead of being silently ignored."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from asterfleet.capture.store import Store
from asterfleet.cli.capture import app
from tests.unit.test_capture_pager import answered


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "capture.db")
    store = Store(path)
    try:
        store.insert_rows(answered("short@x", 0.0, 2.0) + answered("long@x", 10.0, 60.0))
    finally:
        store.close()
    return path


def search(db: str, *args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(app, ["search", "--db", db, *args])
    return done.exit_code, done.stdout, done.stderr


def test_messages_are_listed_by_their_own_fields(db: str) -> None:
    code, out, _ = search(db, "--messages", "--call-id", "long@x", "--method", "BYE", "--json")
    assert code == 0
    assert [(m["call_id"], m["label"]) for m in json.loads(out)] == [("long@x", "BYE")]
    # The same duration filter on calls is what it is for.
    code, out, _ = search(db, "--min-duration", "30s", "--json")
    assert code == 0 and [c["call_id"] for c in json.loads(out)] == ["long@x"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--min-duration", "30s"), "--min-duration finds calls"),
        (("--max-duration", "5"), "--max-duration finds calls"),
        (("--status-class", "2xx"), "--status-class finds calls"),
        (("--text", "sip:100"), "--text finds calls"),
        (("--mos-below", "3.5"), "--mos-below finds calls"),
        (("--node", "ast1"), "--node finds calls"),
        (("--cursor", "abc"), "--cursor finds calls"),
        (("--min-duration", "1", "--balancer", "lb1"), "--min-duration and --balancer find calls"),
    ],
)
def test_call_filters_refuse_messages_in_one_line(
    db: str, args: tuple[str, ...], named: str
) -> None:
    code, out, err = search(db, "--messages", *args)
    lines = err.strip().splitlines()
    assert (code, out) == (2, "")
    assert len(lines) == 1 and named in lines[0] and "leave out --messages" in lines[0], err
