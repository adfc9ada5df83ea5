"""The Calls list's live tail on PostgreSQL, where several writers store
batches at once and commit in their own order: every call is tailed once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import Row, Store
from asterfleet.capture.tail import tail_calls, tail_start
from asterfleet.testing.postgres import PgSandbox

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1_000_000)
GATE = 0x7461696C  # "tail": the advisory lock a held commit waits for

#: A commit held at the door: rows of calls named ``slow…`` make their
#: transaction wait, at COMMIT, for the advisory lock the test holds
#: (their ids are taken by then); ``doomed…`` calls then abort it.
_GATE_SQL = (
    f"""CREATE FUNCTION tail_gate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock_shared({GATE});
        IF NEW.call_id LIKE 'doomed%' THEN RAISE EXCEPTION 'doomed by the test'; END IF;
        RETURN NULL;
    END $$""",
    "CREATE CONSTRAINT TRIGGER tail_gate AFTER INSERT ON sip_messages "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
    "WHEN (NEW.call_id LIKE 'slow%' OR NEW.call_id LIKE 'doomed%') EXECUTE FUNCTION tail_gate()",
)


def invite(call_id: str, ts_us: int = NOW) -> Row:
    raw = f"INVITE sip:100@b SIP/2.0\r\nCall-ID: {call_id}\r\n\r\n".encode()
    return (
        ts_us, "10.0.0.1", 5060, "10.0.0.2", 5060, "udp", 1, "lb1", call_id, "INVITE", None,
        "1 INVITE", "alice", "100", "ua", "", raw, True,
    )  # fmt: skip


@pytest.fixture
def gated(postgres: PgSandbox) -> Iterator[tuple[Store, psycopg.Connection]]:
    """A store with the commit gate, and the connection that holds the gate."""
    store = Store(postgres.url)
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        for sql in _GATE_SQL:
            admin.execute(sql)
        try:
            yield store, admin
        finally:
            store.close()


def held_writer(url: str, rows: list[Row]) -> tuple[threading.Thread, list[BaseException]]:
    """A writer (its own store, as another collector's writer) whose commit
    waits at the gate; the errors it met."""
    errors: list[BaseException] = []

    def write() -> None:
        store = Store(url, create=False)
        try:
            store.insert_rows(rows)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, errors


def wait_until_held(admin: psycopg.Connection, count: int = 1) -> None:
    """Until ``count`` transactions wait for the gate."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        waiting = admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid = %s",
            (GATE,),
        ).fetchone()
        if waiting and waiting[0] >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} writers never reached the commit gate")


def tail_ids(store: Store, position: str, limit: int = 50) -> tuple[list[str], str]:
    step = tail_calls(store, MessageQuery(), position, limit)
    assert not step.restarted
    return [c.call_id for c in step.calls], step.position


def test_a_batch_with_lower_ids_committing_last_is_still_tailed(
    postgres: PgSandbox, gated: tuple[Store, psycopg.Connection]
) -> None:
    store, admin = gated
    start = tail_start(store)
    admin.execute("SELECT pg_advisory_lock(%s)", (GATE,))
    slow, errors = held_writer(postgres.url, [invite("slow-call")])
    wait_until_held(admin)  # its ids are taken: lower than the next batch's
    store.insert_rows([invite("quick-call")])
    seen, position = tail_ids(store, start)
    assert seen == ["quick-call"]
    admin.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
    slow.join(20)
    assert not errors
    seen, position = tail_ids(store, position)
    assert seen == ["slow-call"]
    assert tail_ids(store, position)[0] == []
