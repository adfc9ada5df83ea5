"""PostgreSQL capture storage partitioned by day: new stores are partitioned,
retention drops whole days, an old store is converted with every row kept,
and user prefixes are index ranges whatever the database's collation."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from asterfleet.capture.pager import page_calls
from asterfleet.capture.search import MessageQuery
from asterfleet.capture.store import DAY_US, Row, Store, partition_name
from asterfleet.capture.tables import metadata
from asterfleet.testing.postgres import PgSandbox

pytestmark = pytest.mark.integration

TODAY = int(time.time() * 1_000_000) // DAY_US * DAY_US


def invite(call_id: str, ts_us: int, user: str = "alice") -> Row:
    raw = f"INVITE sip:100@b SIP/2.0\r\nCall-ID: {call_id}\r\n\r\n".encode()
    return (
        ts_us, "10.0.0.1", 5060, "10.0.0.2", 5060, "udp", 1, "lb1", call_id, "INVITE", None,
        "1 INVITE", user, "100", "ua", "", raw, True,
    )  # fmt: skip


def table_rows(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{table}"').scalar_one())


def test_days_get_partitions_and_retention_drops_whole_days(postgres: PgSandbox) -> None:
    store = Store(postgres.url)
    try:
        assert store.partitioned
        long_ago = TODAY - 1000 * DAY_US  # beyond the window: the catch-all partition
        store.insert_rows(
            [
                invite("today-1", TODAY + 1),
                invite("today-2", TODAY + 2),
                invite("yesterday", TODAY - DAY_US + 5),
                invite("ancient", long_ago),
            ]
        )
        today, yesterday = partition_name(TODAY // DAY_US), partition_name(TODAY // DAY_US - 1)
        assert [p[0] for p in store.partitions()] == [yesterday, today]
        assert (table_rows(store, today), table_rows(store, yesterday)) == (2, 1)
        assert table_rows(store, "sip_messages_other") == 1
        assert store.count() == 4

        # A cutoff in the middle of today: yesterday goes whole, today's rows
        # stay until the whole day is older than the cutoff.
        removed = store.delete_older_than(TODAY + DAY_US // 2)
        assert removed == 2  # yesterday's partition and the ancient row
        assert [p[0] for p in store.partitions()] == [today]
        calls = page_calls(store, MessageQuery(), 50).calls
        assert sorted(c.call_id for c in calls) == ["today-1", "today-2"]
        # New rows still get ids and partitions after a drop.
        store.insert_rows([invite("later", TODAY + DAY_US + 1)])
        assert store.count() == 3
    finally:
        store.close()


def test_an_old_store_is_converted_with_every_row_kept(postgres: PgSandbox) -> None:
    # The schema stores had before partitioning (what SQLAlchemy made from
    # the table definition), filled through that old path.
    engine = sa.create_engine(postgres.url.replace("postgresql://", "postgresql+psycopg://"))
    metadata.create_all(engine)
    old_rows = [invite(f"old-{i}", TODAY - 3 * DAY_US + i, user=f"u{i % 3}") for i in range(300)]
    from asterfleet.capture.store import COLUMNS
    from asterfleet.capture.tables import messages

    with engine.begin() as conn:
        conn.execute(messages.insert(), [dict(zip(COLUMNS, r, strict=True)) for r in old_rows])
        before = conn.exec_driver_sql("SELECT id, call_id FROM sip_messages ORDER BY id").all()
    engine.dispose()

    store = Store(postgres.url)
    try:
        assert store.partitioned
        with store.engine.connect() as conn:
            after = conn.exec_driver_sql("SELECT id, call_id FROM sip_messages ORDER BY id").all()
        assert after == before  # nothing lost, ids kept
        parts = store.partitions()
        assert parts[0][0] == "sip_messages_legacy"
        assert parts[0][2] == (TODAY - 3 * DAY_US) // DAY_US * DAY_US + DAY_US
        store.insert_rows([invite("new-1", TODAY + 10)])
        with store.engine.connect() as conn:
            new_id = conn.exec_driver_sql(
                "SELECT id FROM sip_messages WHERE call_id = 'new-1'"
            ).scalar_one()
        assert new_id > before[-1][0]
        calls = page_calls(store, MessageQuery(from_user="u1"), 500).calls
        assert len(calls) == 100
        # Opening the converted store again changes nothing.
        Store(postgres.url).close()
        assert store.count() == 301
        # Retention may now drop the old table whole, and the id sequence survives.
        assert store.delete_older_than(TODAY) == 300
        store.insert_rows([invite("new-2", TODAY + 11)])
        assert store.count() == 2
    finally:
        store.close()


def test_user_prefix_is_an_index_range_under_any_collation(postgres: PgSandbox) -> None:
    admin = sa.create_engine(
        postgres.url.replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(
            "CREATE DATABASE icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
            "LOCALE 'C.UTF-8'"
        )
    admin.dispose()
    url = postgres.url.rsplit("/", 1)[0] + "/icu"
    store = Store(url)
    try:
        rows = [invite(f"c{i}", TODAY + i, user=f"user{i % 500:03d}") for i in range(5000)]
        store.insert_rows(rows)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE sip_messages")
            collation = conn.exec_driver_sql(
                "SELECT daticulocale FROM pg_database WHERE datname = current_database()"
            ).scalar_one()
            plan = "\n".join(
                r[0]
                for r in conn.exec_driver_sql(
                    "EXPLAIN SELECT call_id FROM sip_messages "
                    "WHERE opens_call = true AND from_user LIKE 'user042%%'"
                )
            )
        assert collation == "en-US"
        # The partition's copy of ix_sip_messages_from_prefix, as a range of
        # the pattern operators (what text_pattern_ops gives under ICU).
        assert "Index Cond: ((from_user ~>=~ 'user042'::text)" in plan, plan
        calls = page_calls(store, MessageQuery(from_user="user042"), 50).calls
        assert len(calls) == 10 and {c.from_user for c in calls} == {"user042"}
    finally:
        store.close()


def test_a_store_opened_for_reading_answers_through_the_driver(postgres: PgSandbox) -> None:
    """`capture search --call-id` on PostgreSQL: one driver connection, no
    SQLAlchemy; the same store still runs the walk (the engine is made then),
    and an old store opened for reading is converted as before."""
    from tests.unit.test_cli_imports import loaded, run_probe

    store = Store(postgres.url)
    store.insert_rows([invite("c-1", TODAY + 1), invite("c-2", TODAY + 2, user="bob")])
    store.close()

    reader = Store(postgres.url, create=False)
    try:
        (call,) = page_calls(reader, MessageQuery(call_id="c-2"), 50).calls
        assert (call.call_id, call.from_user) == ("c-2", "bob")
        assert "engine" not in vars(reader)  # read on the driver's own connection
        calls = page_calls(reader, MessageQuery(from_user="al"), 50).calls
        assert [c.call_id for c in calls] == ["c-1"]
    finally:
        reader.close()

    argv = ("capture", "search", "--db", postgres.url, "--call-id", "c-1", "--json")
    modules, out = run_probe(*argv)
    assert [c["call_id"] for c in json.loads(out)] == ["c-1"]
    assert "psycopg" in modules
    assert not loaded(modules, ("sqlalchemy", "asterfleet.capture.tables"))


def test_an_old_store_opened_for_reading_is_converted(postgres: PgSandbox) -> None:
    engine = sa.create_engine(postgres.url.replace("postgresql://", "postgresql+psycopg://"))
    metadata.create_all(engine)
    engine.dispose()
    reader = Store(postgres.url, create=False)
    try:
        assert reader.partitioned
        assert [p[0] for p in reader.partitions()] == ["sip_messages_legacy"]
    finally:
        reader.close()


def test_a_connection_idle_across_a_server_restart_is_replaced(
    postgres: PgSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections are pinged only after sitting idle (not at every
    checkout): one idle across a restart is found broken and replaced."""
    from asterfleet.capture import store as store_module

    store = Store(postgres.url)
    try:
        store.insert_rows([invite("c-1", TODAY + 1)])
        assert [m.call_id for m in store.messages_of_calls(["c-1"])] == ["c-1"]
        postgres.stop()
        postgres.start()
        monkeypatch.setattr(store_module, "PING_AFTER_IDLE_S", 0.0)
        assert [m.call_id for m in store.messages_of_calls(["c-1"])] == ["c-1"]
        (call,) = page_calls(store, MessageQuery(from_user="al"), 50).calls
        assert call.call_id == "c-1"
    finally:
        store.close()


def test_the_walk_goes_back_day_by_day_and_misses_nothing(postgres: PgSandbox) -> None:
    """On day partitions the walk reads a slice of days at a time, newest
    first: every call is listed once, newest first, across slices, pages,
    prefixes and time ranges, also the ones stamped far outside the days
    (in sip_messages_other)."""
    store = Store(postgres.url)
    try:
        now = int(time.time() * 1_000_000)
        stamps = {
            f"d{d:02d}-{k}": now - d * DAY_US - k * 3_600_000_000 for d in range(20) for k in (0, 7)
        }
        stamps |= {"future": now + 30 * DAY_US, "ancient": now - 1000 * DAY_US}
        # On the slices' edges: a day's first microsecond and the one before.
        for d in range(1, 6):
            stamps |= {f"edge{d}-at": TODAY - d * DAY_US, f"edge{d}-below": TODAY - d * DAY_US - 1}
        users = {
            cid: ("bob" if cid.endswith("-7") or cid == "ancient" else "alice") for cid in stamps
        }
        store.insert_rows([invite(cid, ts, user=users[cid]) for cid, ts in stamps.items()])
        assert table_rows(store, "sip_messages_other") == 2

        def listed(q: MessageQuery, limit: int) -> list[str]:
            out: list[str] = []
            cursor = None
            for _ in range(100):
                page = page_calls(store, q, limit, cursor)
                out += [c.call_id for c in page.calls]
                if page.next_cursor is None:
                    return out
                cursor = page.next_cursor
            raise AssertionError("the pages never ended")

        newest_first = sorted(stamps, key=lambda c: -stamps[c])
        assert listed(MessageQuery(), 50) == newest_first
        assert listed(MessageQuery(), 3) == newest_first
        bobs = [c for c in newest_first if users[c] == "bob"]
        assert listed(MessageQuery(from_user="bo"), 4) == bobs
        since, until = now - 12 * DAY_US, now - 3 * DAY_US
        in_range = [c for c in newest_first if since <= stamps[c] <= until]
        assert listed(MessageQuery(since_us=since, until_us=until), 5) == in_range
        assert listed(MessageQuery(from_user="zed"), 50) == []
    finally:
        store.close()
