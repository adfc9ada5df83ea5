"""The Calls list's live tail on PostgreSQL, where several writers store
batches at once and commit in their own order: every call is tailed once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from asterfleet.capture.pager import page_calls
from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import Row, Store
from asterfleet.capture.tail import Position, Snapshot, tail_calls, tail_start
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


def test_an_aborted_batch_is_never_tailed_and_holds_nothing_up(
    postgres: PgSandbox, gated: tuple[Store, psycopg.Connection]
) -> None:
    store, admin = gated
    position = tail_start(store)
    admin.execute("SELECT pg_advisory_lock(%s)", (GATE,))
    doomed, errors = held_writer(postgres.url, [invite("doomed-call")])
    wait_until_held(admin)
    store.insert_rows([invite("quick-call")])
    seen, position = tail_ids(store, position)
    assert seen == ["quick-call"]
    running = Position.decode(position).done.xip
    assert running  # the doomed batch's transaction, not done yet
    admin.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
    doomed.join(20)
    assert errors and "doomed by the test" in str(errors[0])
    seen, position = tail_ids(store, position)
    assert seen == []
    assert not set(running) & set(Position.decode(position).done.xip)
    store.insert_rows([invite("later-call")])
    assert tail_ids(store, position)[0] == ["later-call"]


def test_batches_of_several_collectors_are_each_tailed_once(
    postgres: PgSandbox, gated: tuple[Store, psycopg.Connection]
) -> None:
    """Three collectors' writers: some hold their commit while the others
    store batch after batch (their ids interleave, and lower ids become
    visible last); a tail polling all along, a few calls at a time, lists
    every call once."""
    store, admin = gated
    position = tail_start(store)
    admin.execute("SELECT pg_advisory_lock(%s)", (GATE,))
    held = [
        held_writer(postgres.url, [invite(f"slow-{k}-{i}") for i in range(8)]) for k in range(3)
    ]
    wait_until_held(admin, 3)
    stored = [f"slow-{k}-{i}" for k in range(3) for i in range(8)]

    def collector(k: int) -> None:
        own = Store(postgres.url, create=False)
        try:
            for b in range(6):
                own.insert_rows([invite(f"quick-{k}-{b}-{i}") for i in range(5)])
        finally:
            own.close()

    quick = [threading.Thread(target=collector, args=(k,)) for k in range(3)]
    stored += [f"quick-{k}-{b}-{i}" for k in range(3) for b in range(6) for i in range(5)]
    for thread in quick:
        thread.start()
    seen: list[str] = []
    polls = 0
    while any(t.is_alive() for t in quick) and polls < 2000:
        calls, position = tail_ids(store, position, limit=4)
        seen += calls
        polls += 1
    for thread in quick:
        thread.join(30)
    admin.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
    for thread, errors in held:
        thread.join(20)
        assert not errors
    for _ in range(100):
        calls, position = tail_ids(store, position, limit=4)
        if not calls and not Position.decode(position).sent:
            break
        seen += calls
    assert sorted(seen) == sorted(stored)
    assert len(seen) == len(set(seen))
    # The held batches' ids are below those of every batch visible before them.
    with store.reading() as conn:
        slow_top, quick_bottom = conn.exec_driver_sql(
            "SELECT max(id) FILTER (WHERE call_id LIKE 'slow%%'), "
            "min(id) FILTER (WHERE call_id LIKE 'quick%%') FROM sip_messages"
        ).one()
    assert slow_top < quick_bottom


def test_a_tail_resumes_from_its_position_part_way_through_a_batch(postgres: PgSandbox) -> None:
    """As a console restarted (another store) with the browser's
    Last-Event-ID: the tail goes on where it was, inside a batch too."""
    store = Store(postgres.url)
    try:
        position = tail_start(store)
        store.insert_rows([invite("a")])
        store.insert_rows([invite(c) for c in ("b", "c", "d")])
        store.insert_rows([invite("e")])
        seen, position = tail_ids(store, position, limit=2)
        assert seen == ["a", "b"]
        assert [x for x, _ in Position.decode(position).sent]  # part of a batch sent
    finally:
        store.close()
    other = Store(postgres.url, create=False)
    try:
        seen, position = tail_ids(other, position, limit=2)
        assert seen == ["c", "d"]
        assert tail_ids(other, position, limit=2)[0] == ["e"]
    finally:
        other.close()


def test_a_position_it_cannot_go_on_from_starts_the_tail_from_now(postgres: PgSandbox) -> None:
    store = Store(postgres.url)
    try:
        now = Position.decode(tail_start(store))
        hour_ago = Position(now.taken_us - 3_600_000_000, now.done).encode()
        ahead = Position(now.taken_us, Snapshot(now.done.xmax + 1_000_000)).encode()
        for given, why in (
            ("garbage", "not one this console gave"),
            ("12345", "not one this console gave"),  # an id, as SQLite's (and before)
            ("1:2:3:4:5", "not one this console gave"),
            (hour_ago, "away longer than the capture store remembers"),
            (ahead, "ahead of this capture store"),
        ):
            store.insert_rows([invite(f"before-{why[:5]}")])
            step = tail_calls(store, MessageQuery(), given)
            assert step.calls == [] and why in step.restarted, given
            store.insert_rows([invite(f"after-{why[:5]}")])
            assert tail_ids(store, step.position)[0] == [f"after-{why[:5]}"]
    finally:
        store.close()


def test_the_compiled_copy_path_logs_its_batches_for_the_tail(postgres: PgSandbox) -> None:
    """The collector's own path (binary COPY tuples, RTCP beside them, and
    a batch of RTCP only): each batch logged with its transaction, ids and
    days; the tail lists its call once."""
    from asterfleet.capture.collector import Batch, packet_to_row, parse_for_store
    from asterfleet.capture.hep import HepPacket, encode_hep
    from asterfleet.capture.store import DAY_US, RTCP_TAG
    from tests.unit.test_capture_rtcp import block, report, rtcp_packet

    store = Store(postgres.url)
    try:
        position = tail_start(store)
        sip = b"INVITE sip:100@b SIP/2.0\r\nCall-ID: k1\r\nCSeq: 1 INVITE\r\n\r\n"
        packet = encode_hep(
            HepPacket(
                payload=sip, src_ip="10.0.0.1", dst_ip="10.0.0.2", src_port=5060,
                dst_port=5060, ts_sec=NOW // 1_000_000, capture_id=1,
            )
        )  # fmt: skip
        parsed = parse_for_store(Batch([packet] * 2, 2), None, NOW, True)
        assert parsed.copied == 2
        rtcp = packet_to_row(rtcp_packet("k1", report(block(source=9))), None, NOW)
        assert rtcp[0] == RTCP_TAG
        assert store.insert_rows([*parsed.rows, rtcp], parsed.copy, parsed.days, parsed.id)
        assert store.insert_rows([rtcp], batch_id=b"rtcp-only")
        with store.reading() as conn:
            logged = conn.exec_driver_sql(
                "SELECT last_id - ids_above >= 2, first_day, last_day, xact IS NOT NULL "
                "FROM capture_batches ORDER BY xact"
            ).all()
        day = NOW // DAY_US
        assert [tuple(r) for r in logged] == [(True, day, day, True), (False, None, None, True)]
        seen, position = tail_ids(store, position)
        assert seen == ["k1"]
        assert tail_ids(store, position)[0] == []
    finally:
        store.close()


def test_a_store_of_an_earlier_version_gets_the_batch_log(postgres: PgSandbox) -> None:
    """Its batch log lacks the tail's columns: the next store to open it
    adds them; batches its old writers still log (no id range) are passed
    over, the others are tailed."""
    store = Store(postgres.url)
    store.close()
    with psycopg.connect(postgres.url, autocommit=True) as admin:
        admin.execute("DROP INDEX ix_capture_batches_xact")
        for column in ("xact", "ids_above", "last_id", "first_day", "last_day"):
            admin.execute(f"ALTER TABLE capture_batches DROP COLUMN {column}")
    console = Store(postgres.url, create=False)
    try:
        position = tail_start(console)
        with psycopg.connect(postgres.url) as old_writer:  # as the earlier version wrote
            old_writer.execute(
                "INSERT INTO capture_batches (batch_id, stored_us) VALUES ('\\x01', 1)"
            )
            old_writer.execute(
                "INSERT INTO sip_messages (ts_us, src_ip, src_port, dst_ip, dst_port, transport, "
                "capture_id, capture_host, call_id, method, cseq, from_user, to_user, "
                "user_agent, correlation_id, raw, opens_call) VALUES (%s, '10.0.0.1', 5060, "
                "'10.0.0.2', 5060, 'udp', 1, 'lb1', 'old-call', 'INVITE', '1 INVITE', 'a', "
                "'b', 'ua', '', '\\x00', true)",
                (NOW,),
            )
        writer = Store(postgres.url)
        try:
            writer.insert_rows([invite("new-call")])
        finally:
            writer.close()
        assert tail_ids(console, position)[0] == ["new-call"]
        assert [c.call_id for c in page_calls(console, MessageQuery()).calls] == [
            "new-call",
            "old-call",
        ]
    finally:
        console.close()


def test_a_batch_is_read_along_the_id_index_on_a_day_not_yet_analysed(
    postgres: PgSandbox,
) -> None:
    """A new day's partition has no statistics for a minute or so; walking
    its time index would read the whole day so far for each batch."""
    from asterfleet.capture.store import DAY_US, partition_name
    from asterfleet.capture.tail import _BY_ID, _Batch, _openings
    from tests.integration.test_capture_partitions import index_used

    store = Store(postgres.url)
    try:
        for b in range(4):
            store.insert_rows([invite(f"c{b}-{i}", NOW + i) for i in range(2000)])
        with store.engine.connect() as conn, conn.begin():
            row = conn.exec_driver_sql(
                "SELECT xact::text, ids_above, last_id, first_day, last_day "
                "FROM capture_batches ORDER BY xact DESC LIMIT 1"
            ).one()
            batch = _Batch(int(row[0]), *row[1:])
            for sql in _BY_ID:
                conn.exec_driver_sql(sql)
            for q in (MessageQuery(), MessageQuery(status_class="2xx")):
                query = _openings(store, q, batch, batch.ids_above or 0, 51).compile(
                    dialect=conn.dialect, compile_kwargs={"literal_binds": True}
                )
                plan = "\n".join(
                    r[0] for r in conn.exec_driver_sql("EXPLAIN " + str(query).replace("%", "%%"))
                )
                day = partition_name(NOW // DAY_US)
                (walk,) = [line for line in plan.splitlines() if f" on {day} sip_messages " in line]
                assert index_used(store, walk, day) == "ix_sip_messages_opening_id", plan
                assert "JIT" not in plan
    finally:
        store.close()


def test_transactions_of_the_server_s_other_databases_are_not_in_the_position(
    postgres: PgSandbox, gated: tuple[Store, psycopg.Connection]
) -> None:
    """A shared server runs other databases' transactions, some for long:
    PostgreSQL's snapshot lists them, but they write no batch here, so the
    position does not carry them (it would grow with them)."""
    store, admin = gated
    admin.execute("CREATE DATABASE tail_elsewhere")
    elsewhere_url = postgres.url.rsplit("/", 1)[0] + "/tail_elsewhere"
    with psycopg.connect(elsewhere_url) as elsewhere:
        (other,) = elsewhere.execute("SELECT pg_current_xact_id()::text").fetchone() or ("",)
        store.insert_rows([invite("first-call")])  # a later transaction ends: `other` is below xmax
        (snapshot,) = admin.execute("SELECT pg_current_snapshot()::text").fetchone() or ("",)
        assert other in snapshot.split(":")[2].split(",")
        position = tail_start(store)
        assert int(other) not in Position.decode(position).done.xip
        store.insert_rows([invite("next-call")])
        seen, position = tail_ids(store, position)
        assert seen == ["next-call"] and int(other) not in Position.decode(position).done.xip
        elsewhere.rollback()


def test_two_collectors_writers_are_tailed_call_by_call(
    tmp_path: Path, postgres: PgSandbox
) -> None:
    """The real thing: two `capture run` into one store, three writer
    processes each, small batches over TCP (one collector's messages
    stamped now, the other's years ago, so stored outside the day
    partitions), while a tail polls: every call is tailed, once."""
    from asterfleet.runtime.process import wait_for
    from tests.integration.test_capture_collector import CaptureServer
    from tests.unit.test_hep_samples import INVITE, hep

    store = Store(postgres.url)
    position = tail_start(store)
    args = ["--writers", "3", "--batch-size", "40"]
    collectors = [
        CaptureServer(tmp_path / name, db=postgres.url, args=args) for name in ("c1", "c2")
    ]
    sent: list[str] = []
    try:
        for collector in collectors:
            collector.work.mkdir()
            collector.start()

        def send(k: int, port: int) -> None:
            stamp = {"ts_sec": NOW // 1_000_000} if k == 0 else {}
            with socket.create_connection(("127.0.0.1", port)) as tcp:
                for start in range(0, 1500, 20):
                    tcp.sendall(
                        b"".join(
                            hep(INVITE.replace(b"call-1@test", f"k{k}-{i}".encode()), ip_proto=6,
                                **stamp)
                            for i in range(start, start + 20)
                        )
                    )  # fmt: skip
                    time.sleep(0.005)  # paced: many small batches, stored side by side

        senders = [
            threading.Thread(target=send, args=(k, c.port)) for k, c in enumerate(collectors)
        ]
        sent = [f"k{k}-{i}" for k in range(2) for i in range(1500)]
        for thread in senders:
            thread.start()
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while len(seen) < len(sent) and time.monotonic() < deadline:
            calls, position = tail_ids(store, position)
            seen += calls
        for thread in senders:
            thread.join(10)
        wait_for(lambda: store.count() == len(sent), timeout=30, what="every message stored")
        for _ in range(100):  # what was stored after the last poll
            calls, position = tail_ids(store, position)
            if not calls:
                break
            seen += calls
        assert sorted(seen) == sorted(sent)
        assert len(seen) == len(set(seen))
        with store.reading() as conn:
            batches = conn.exec_driver_sql("SELECT count(*) FROM capture_batches").scalar_one()
        assert batches >= 30, batches  # many, from six writers at once
    finally:
        for collector in collectors:
            collector.stop()
        store.close()
