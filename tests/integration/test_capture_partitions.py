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


def plan_of(store: Store, sql: str) -> str:
    with store.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE sip_messages")
        return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))


def partition_indexes(store: Store, table: str) -> dict[str, str]:
    """A partition's indexes: the parent index each belongs to → its access method."""
    return {parent: method for parent, (method, _) in _indexes_of(store, table).items()}


def index_used(store: Store, plan: str, table: str) -> str:
    """Which of the parent's indexes the plan reads ``table`` through."""
    for parent, (_, child) in _indexes_of(store, table).items():
        for line in plan.splitlines():
            if "Index" in line and (f" on {child} " in line or f" using {child} " in line):
                return parent
    return ""


def _indexes_of(store: Store, table: str) -> dict[str, tuple[str, str]]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT p.relname, am.amname, c.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_am am ON am.oid = c.relam JOIN pg_index x ON x.indexrelid = c.oid "
            "WHERE x.indrelid = %s::regclass",
            (table,),
        ).all()
    return {str(name): (str(method), str(child)) for name, method, child in rows}


def test_every_message_is_indexed_twice_and_each_search_has_its_index(
    postgres: PgSandbox,
) -> None:
    """What storing a message costs is mostly its index entries: only time
    (BRIN) and the Call-ID's hash cover every message, the rest only openings;
    the Call-ID lookup, the live tail and the user prefix still find their
    rows through an index."""
    store = Store(postgres.url)
    try:
        rows = [invite(f"c{i}", TODAY + i, user=f"user{i % 50:02d}") for i in range(3000)]
        store.insert_rows(rows)
        today = partition_name(TODAY // DAY_US)
        assert partition_indexes(store, today) == {
            "ix_sip_messages_ts_brin": "brin",
            "ix_sip_messages_call_key": "btree",
            "ix_sip_messages_opening_ts": "btree",
            "ix_sip_messages_opening_id": "btree",
            "ix_sip_messages_from_prefix": "btree",
            "ix_sip_messages_to_prefix": "btree",
        }
        with store.engine.connect() as conn:
            partial = {
                name
                for (name,) in conn.exec_driver_sql(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'sip_messages' "
                    "AND indexdef LIKE '%%WHERE (opens_call = true)'"
                )
            }
        assert partial == {
            "ix_sip_messages_opening_ts", "ix_sip_messages_opening_id",
            "ix_sip_messages_from_prefix", "ix_sip_messages_to_prefix",
        }  # fmt: skip
        from asterfleet.capture.store import _MESSAGES_OF_CALLS

        lookup = plan_of(
            store,
            _MESSAGES_OF_CALLS.replace("%", "%%")
            + "hashtext(call_id) = ANY(ARRAY(SELECT hashtext(unnest('{c7,c9}'::text[])))) "
            "AND call_id = ANY('{c7,c9}')",
        )
        assert index_used(store, lookup, today) == "ix_sip_messages_call_key", lookup
        tail = plan_of(
            store, "SELECT call_id FROM sip_messages WHERE opens_call = true AND id > 2990"
        )
        assert index_used(store, tail, today) == "ix_sip_messages_opening_id", tail
        assert [m.call_id for m in store.messages_of_calls(["c7", "c9"])] == ["c7", "c9"]
        from asterfleet.capture.tail import tail_calls, tail_start

        newest = tail_start(store)
        store.insert_rows([invite("fresh", TODAY + 5000)])
        step = tail_calls(store, MessageQuery(), newest)
        assert [c.call_id for c in step.calls] == ["fresh"]
    finally:
        store.close()


def test_a_store_with_the_old_indexes_is_reindexed_by_its_writer(postgres: PgSandbox) -> None:
    """A store made by an earlier version (btrees of every message's time,
    Call-ID and id) is read as it is, and gets this version's indexes when a
    writer opens it, with every row kept."""
    store = Store(postgres.url)
    store.insert_rows([invite(f"c{i}", TODAY + i) for i in range(200)])
    with store.engine.begin() as conn:
        for name in ("call_key", "opening_id", "ts_brin"):
            conn.exec_driver_sql(f"DROP INDEX ix_sip_messages_{name}")
        for name, column in (("ts", "ts_us"), ("call_id", "call_id"), ("id", "id")):
            conn.exec_driver_sql(f"CREATE INDEX ix_sip_messages_{name} ON sip_messages ({column})")
    store.close()

    reader = Store(postgres.url, create=False)
    try:
        assert [m.call_id for m in reader.messages_of_calls(["c5"])] == ["c5"]
        assert "ix_sip_messages_call_id" in partition_indexes(
            reader, partition_name(TODAY // DAY_US)
        )
    finally:
        reader.close()

    writer = Store(postgres.url)
    try:
        names = set(partition_indexes(writer, partition_name(TODAY // DAY_US)))
        assert {"ix_sip_messages_call_key", "ix_sip_messages_ts_brin"} <= names
        assert not names & {"ix_sip_messages_ts", "ix_sip_messages_call_id", "ix_sip_messages_id"}
        assert writer.count() == 200
        assert [m.call_id for m in writer.messages_of_calls(["c5"])] == ["c5"]
    finally:
        writer.close()
    # Now current: a reader opens it through the driver alone again.
    again = Store(postgres.url, create=False)
    try:
        assert "engine" not in vars(again)
    finally:
        again.close()


def test_the_message_search_walks_back_in_slices_and_misses_nothing(postgres: PgSandbox) -> None:
    """Capture time has only a BRIN index: the message search reads slices
    of time newest first. It lists every match newest first, across slices
    from a second to months, with a limit, a time range and a filter, and
    messages stamped in the future or far in the past."""
    from asterfleet.capture.search import search_messages

    store = Store(postgres.url)
    try:
        now = int(time.time() * 1_000_000)
        ages_s = [0.2, 0.9, 1.1, 3, 4.9, 5.1, 30, 600, 7200, 86_400 * 3, 86_400 * 40, 86_400 * 90]
        stamps = {f"m{i}": now - int(a * 1_000_000) for i, a in enumerate(ages_s)}
        stamps |= {"future": now + 3_600_000_000, "ancient": now - 1000 * DAY_US}
        users = {cid: ("bob" if i % 3 == 0 else "alice") for i, cid in enumerate(stamps)}
        store.insert_rows([invite(cid, ts, user=users[cid]) for cid, ts in stamps.items()])
        newest_first = sorted(stamps, key=lambda c: -stamps[c])

        def found(**kw: object) -> list[str]:
            return [m.call_id for m in search_messages(store, MessageQuery(**kw))]  # type: ignore[arg-type]

        assert found(limit=100) == newest_first
        for limit in (1, 2, 5, 13):
            assert found(limit=limit) == newest_first[:limit]
        assert found(from_user="bo", limit=100) == [c for c in newest_first if users[c] == "bob"]
        since, until = now - 7300 * 1_000_000, now - 2 * 1_000_000
        assert found(since_us=since, until_us=until, limit=100) == [
            c for c in newest_first if since <= stamps[c] <= until
        ]
        assert found(call_id="m7") == ["m7"]
    finally:
        store.close()


def test_size_retention_on_one_day_removes_the_oldest(postgres: PgSandbox) -> None:
    """With one partition left, size retention deletes rows: the oldest
    share, cut at a sampled time (no btree of every message's time), once
    (deleted rows leave PostgreSQL's files as large as before)."""
    store = Store(postgres.url)
    try:
        rows = [invite(f"c{i:05d}", TODAY + i * 1000) for i in range(20_000)]
        store.insert_rows(rows)
        size = store.size_bytes()
        removed = store.trim_to_size(size // 2)
        left = store.count()
        assert removed == 20_000 - left
        # The share that brings the store 10 % under the cap (sampled: about).
        assert 7_000 < left < 11_000, left
        with store.engine.connect() as conn:
            oldest_left = conn.exec_driver_sql("SELECT min(call_id) FROM sip_messages").scalar()
        # What is left is the newest rows, all of them.
        assert oldest_left == f"c{20_000 - left:05d}"
    finally:
        store.close()


def test_a_batch_sent_again_is_stored_once_on_postgresql(postgres: PgSandbox) -> None:
    """The collector's path on PostgreSQL (binary COPY tuples from the
    compiled parser, RTCP rows beside them): a batch id seen before stores
    nothing again."""
    from asterfleet.capture.collector import Batch, parse_for_store
    from asterfleet.capture.hep import HepPacket, encode_hep

    store = Store(postgres.url)
    try:
        sip = b"INVITE sip:100@b SIP/2.0\r\nCall-ID: k1\r\nCSeq: 1 INVITE\r\n\r\n"
        packet = encode_hep(
            HepPacket(
                payload=sip, src_ip="10.0.0.1", dst_ip="10.0.0.2", src_port=5060,
                dst_port=5060, ts_sec=TODAY // 1_000_000 + 60, capture_id=1,
            )
        )  # fmt: skip
        batch = Batch([packet] * 3, 3)
        parsed = parse_for_store(batch, None, TODAY + 1, True)
        assert parsed.copied == 3 and parsed.id == batch.id
        assert store.insert_rows(parsed.rows, parsed.copy, parsed.days, parsed.id)
        assert not store.insert_rows(parsed.rows, parsed.copy, parsed.days, parsed.id)
        assert store.count() == 3
    finally:
        store.close()


def test_the_call_id_lookup_is_planned_once_per_connection(postgres: PgSandbox) -> None:
    """A Call-ID prunes no partition, so its plan names every day: it runs
    as a prepared statement (planned once per connection); the walks on the
    same connection stay unprepared (a generic plan cannot use a prefix)."""
    store = Store(postgres.url)
    try:
        store.insert_rows([invite(f"c{d}", TODAY - d * DAY_US + 5) for d in range(40)])
        prepared = "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%%hashtext%%'"
        with store.reading() as conn:
            for d in (3, 30, 3):
                assert [m.call_id for m in store.messages_of_calls([f"c{d}"], conn)] == [f"c{d}"]
            assert conn.exec_driver_sql(prepared).scalar_one() == 1
            assert conn.connection.driver_connection.prepare_threshold is None
        reader = Store(postgres.url, create=False)
        try:
            assert [m.call_id for m in reader.messages_of_calls(["c7"])] == ["c7"]
            assert reader._driver.execute(prepared.replace("%%", "%")).fetchone()[0] == 1
            assert reader._driver.prepare_threshold is None
        finally:
            reader.close()
    finally:
        store.close()
