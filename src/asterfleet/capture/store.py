"""Where captured SIP messages live: SQLite (default) or PostgreSQL.

SQLAlchemy Core for the schema and the queries; the hot insert path goes to
the driver directly (``executemany`` on SQLite, binary ``COPY`` on
PostgreSQL), because at tens of thousands of rows a second the ORM-free Core
insert is still the slowest part. SQLite runs in WAL mode so searches read
while the collector writes.

On PostgreSQL ``sip_messages`` is partitioned by capture time, one partition
per UTC day (``sip_messages_pYYYYMMDD``, made when the first message of that
day is stored; messages stamped more than :data:`PARTITION_PAST_DAYS` days
in the past or :data:`PARTITION_FUTURE_DAYS` in the future go to
``sip_messages_other``), so retention drops whole partitions instead of
deleting rows. The users are indexed with ``text_pattern_ops`` on the
messages that open a call, so a prefix search is an index range under any
collation. A database made before partitioning is converted when a store
opens it: the old table becomes the partition of everything up to the end
of its newest day, with every row kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from asterfleet.errors import UsageError

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

# SQLAlchemy (and the tables, asterfleet.capture.tables) are imported where
# they are used: a store opens and reads a call through the driver alone, so
# `asterfleet capture search --call-id` starts in a fraction of the time.

#: Column order of a row tuple handed to :meth:`Store.insert_rows`.
COLUMNS = (
    "ts_us",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "transport",
    "capture_id",
    "capture_host",
    "call_id",
    "method",
    "status",
    "cseq",
    "from_user",
    "to_user",
    "user_agent",
    "correlation_id",
    "raw",
    "opens_call",
)

#: PostgreSQL types of :data:`COLUMNS`, for the binary COPY.
COPY_TYPES = (
    "int8", "text", "int4", "text", "int4", "text", "int8", "text", "text", "text", "int4",
    "text", "text", "text", "text", "text", "bytea", "bool",
)  # fmt: skip

#: Binary COPY framing (PostgreSQL's): the signature with zero flags and no
#: header extension, then tuples, then the trailer.
COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"

#: A row: values in :data:`COLUMNS` order.
Row = tuple[Any, ...]

#: Rough bytes a row costs besides its raw message (indexes, other columns).
ROW_OVERHEAD = 160

#: PostgreSQL partitions: one per UTC day, in µs.
DAY_US = 86_400_000_000
#: Days before and after now that get their own partition; other times go
#: to ``sip_messages_other`` (a sender's broken clock cannot make thousands).
PARTITION_PAST_DAYS = 400
PARTITION_FUTURE_DAYS = 7


#: How long the batch log (``capture_batches``) remembers a stored batch: a
#: batch sent again comes within seconds (a writer's restart, a lost commit
#: answer), and the Calls list's live tail resumes from a position up to
#: about this old (:mod:`asterfleet.capture.tail`).
BATCH_IDS_KEPT_S = 3600.0

#: Tag in a row's first place: an RTCP report (HEP type 5), not a SIP message.
RTCP_TAG = "rtcp"

#: Columns of ``rtcp_reports``: one row per report block (one stream, one report).
RTCP_COLUMNS = (
    "ts_us",
    "call_id",
    "capture_host",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "ssrc",
    "report_type",
    "source_ssrc",
    "fraction_lost",
    "packets_lost",
    "jitter_ms",
    "rtt_ms",
    "mos",
    "clock_hz",
)


@dataclass(frozen=True, slots=True)
class StreamQuality:
    """One stream of a call (its SSRC), from its latest RTCP report."""

    source_ssrc: int
    #: The reporter: the receiver of the stream (its address).
    reporter: str
    reports: int
    fraction_lost: float
    packets_lost: int
    jitter_ms: float
    rtt_ms: float | None
    mos: float
    #: The lowest MOS of any of its reports.
    min_mos: float
    #: The RTP clock rate its jitter and MOS are at.
    clock_hz: int = 8000


@dataclass(frozen=True, slots=True)
class Message:
    """One stored SIP message."""

    id: int
    ts_us: int
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    transport: str
    capture_id: int
    #: The HEP sender that captured this copy (its HEP capture name; "" when it sends none).
    capture_host: str
    call_id: str
    method: str | None
    status: int | None
    cseq: str
    from_user: str
    to_user: str
    user_agent: str
    correlation_id: str
    raw: bytes
    opens_call: bool = False

    @property
    def src(self) -> str:
        return _hostport(self.src_ip, self.src_port)

    @property
    def dst(self) -> str:
        return _hostport(self.dst_ip, self.dst_port)

    @property
    def label(self) -> str:
        return self.method if self.method is not None else str(self.status)

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def message_from_row(row: Sequence[Any]) -> Message:
    values = list(row)
    values[_RAW] = bytes(values[_RAW])
    values[_RAW + 1] = bool(values[_RAW + 1])
    return Message(*values)


#: Where ``raw`` sits in a selected row (``id`` first, then :data:`COLUMNS`).
_RAW = 1 + COLUMNS.index("raw")


def parse_size(text: str) -> int:
    """``10GB`` → bytes (K, M, G, T as powers of 1024; plain number = bytes)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    factor = 1
    if value and value[-1] in units:
        factor = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"size {text!r}: expected a number with K, M, G or T, e.g. 10GB") from None
    if not 0 < number < math.inf:
        raise UsageError(f"size {text!r} must be a positive, finite number")
    return int(number * factor)


def parse_duration(text: str) -> float:
    """``7d`` → seconds (s, m, h, d, w; plain number = seconds)."""
    value = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    factor = 1
    if value and value[-1] in units:
        factor = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise UsageError(
            f"duration {text!r}: expected a number with s, m, h, d or w, e.g. 7d"
        ) from None
    if not 0 < number < math.inf:
        raise UsageError(f"duration {text!r} must be a positive, finite number")
    return number * factor


def normalise_url(url: str) -> str:
    """A SQLAlchemy URL: a bare path means SQLite; postgresql:// means psycopg 3."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Store:
    """One database of captured messages (thread-confined: one per thread)."""

    def __init__(self, url: str, create: bool = True) -> None:
        self.url = normalise_url(url)
        self._given_url = url
        #: Days (since the epoch) known to have a partition (PostgreSQL).
        self._days: set[int] = set()
        self.partitioned = False
        #: The driver's own connection, no engine (see :meth:`_open_read_only`).
        self._driver: Any = None
        #: PostgreSQL: an id the sequence gave before this store's next batch
        #: (its previous batch's last): every id of that batch is above it.
        self._ids_issued: int | None = None
        placeholders = ", ".join("?" for _ in COLUMNS)
        self._sqlite_insert = (
            f"INSERT INTO sip_messages ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        )
        self._copy_sql = f"COPY sip_messages ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        if not create and self._open_read_only():
            return
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise UsageError(f"database URL {url!r}: only SQLite and PostgreSQL are supported")
        current = self.dialect == "postgresql" and _pg_schema_current(self.engine)
        if current:
            # The usual case, in one round trip.
            self.partitioned = True
        elif self.dialect == "postgresql":
            if create:
                _create_partitioned(self.engine)
            _rename_node_column(self.engine)
            _add_opens_call(self.engine)
            self.partitioned = _partition_existing(self.engine)
            if self.partitioned and create:
                _ensure_indexes(self.engine)
        else:
            if create:
                from asterfleet.capture.tables import metadata

                metadata.create_all(self.engine)
            _rename_node_column(self.engine)
            _add_opens_call(self.engine)
        # Databases written before RTCP was stored, or batches named, lack
        # those tables (as do stores opened with create=False): add them,
        # the messages stay.
        if not current:
            from asterfleet.capture.tables import batches, rtcp_reports

            rtcp_reports.create(self.engine, checkfirst=True)
            batches.create(self.engine, checkfirst=True)
            _add_rtcp_clock(self.engine)
            if self.dialect == "postgresql":
                _ensure_batch_log(self.engine)

    @cached_property
    def engine(self) -> Engine:
        """The SQLAlchemy engine: made when the store opens, or at the first
        query that needs it on a store opened read-only."""
        import sqlalchemy as sa

        from asterfleet.storage import open_engine

        options: dict[str, Any] = {"pool_pre_ping": False}
        if self.url.startswith("postgresql"):
            # No server-side prepared statements: after five runs the driver
            # would prepare a walk, and PostgreSQL may then keep a generic
            # plan, one that cannot see the prefix of ``from_user LIKE $1``
            # (twice as slow for 10 users in an hour, measured).
            options["connect_args"] = {"prepare_threshold": None}
        try:
            engine = open_engine(self._given_url, extra_pragmas=("synchronous=NORMAL",), **options)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise UsageError(
                f"database URL {self._given_url!r} is not usable ({exc}): give a SQLite file "
                "path or postgresql://USER@HOST:PORT/DB"
            ) from None
        if engine.dialect.name != "sqlite":
            _ping_when_idle(engine)
        return engine

    def _open_read_only(self) -> bool:
        """Open a store for reading (``create=False``) through the driver
        alone: no SQLAlchemy, one connection, one question (is the schema
        this version's?). False when it is not (an old store is migrated on
        the engine, as before), or when the driver cannot take the URL."""
        if self.url.startswith("postgresql+psycopg://"):
            dialect = "postgresql"
        elif self.url.startswith("sqlite:///") and self.url[10:] and "?" not in self.url:
            dialect = "sqlite"
            if self.url[10:].startswith(":memory:"):
                return False  # a second connection would see another database
        else:
            return False
        try:
            if dialect == "postgresql":
                import psycopg

                driver: Any = psycopg.connect(
                    "postgresql://" + self.url.split("://", 1)[1],
                    autocommit=True,
                    prepare_threshold=None,
                )
                probe = _SCHEMA_PROBE
            else:
                import sqlite3

                driver = sqlite3.connect(
                    self.url[10:], timeout=30, check_same_thread=False, isolation_level=None
                )
                probe = _SQLITE_SCHEMA_PROBE
            try:
                current = bool(driver.execute(probe).fetchone()[0])
            except Exception:
                driver.close()
                raise
        except Exception:
            return False  # the engine's open says what is wrong, as it always did
        if not current:
            driver.close()
            return False
        self.dialect = dialect
        self.partitioned = dialect == "postgresql"
        self._driver = driver
        return True

    def _fetch(
        self,
        pg_sql: str,
        sqlite_sql: str,
        params: Sequence[Any],
        conn: sa.Connection | None,
        prepared: bool = False,
    ) -> list[Any]:
        """Rows of one plain SQL query (``%s`` placeholders on PostgreSQL,
        ``?`` on SQLite): on ``conn`` when given, on the driver's connection
        of a store opened read-only, else on the engine (its errors wrapped
        as SQLAlchemy's). ``prepared``: on PostgreSQL, as a prepared
        statement of its connection (planned once: for a query that cannot
        prune partitions, planning grows with their number)."""
        sql = pg_sql if self.dialect == "postgresql" else sqlite_sql
        if self._driver is not None and conn is None:
            with _prepared_on(self._driver, prepared and self.dialect == "postgresql"):
                return list(self._driver.execute(sql, tuple(params)).fetchall())
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self.reading())
            if prepared and self.dialect == "postgresql":
                stack.enter_context(_prepared_on(conn.connection.driver_connection, True))
            return list(conn.exec_driver_sql(sql, tuple(params)).all())

    def reading(self) -> sa.Connection:
        """A connection for queries that only read, outside a transaction:
        no BEGIN before them and no ROLLBACK after (on PostgreSQL two round
        trips of four, and the wait for the server to be scheduled for each
        on a busy machine). Use it as a context manager."""
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None
        if "engine" in self.__dict__:
            self.engine.dispose()

    # -- writing -----------------------------------------------------------

    def insert_rows(
        self,
        rows: Sequence[Row],
        copy_tuples: bytes = b"",
        copy_days: Iterable[int] = (),
        batch_id: bytes | None = None,
    ) -> bool:
        """Insert a batch in one transaction (all or nothing); False when
        the batch ``batch_id`` was stored before (nothing is stored again).

        SIP rows are in :data:`COLUMNS` order; an RTCP row is
        ``(RTCP_TAG, block_rows)`` with block rows in :data:`RTCP_COLUMNS` order.
        On PostgreSQL, ``copy_tuples`` are more SIP rows already in binary
        COPY form (the collector's compiled path), stamped on ``copy_days``
        (UTC days, µs // :data:`DAY_US`). The batch's id is recorded in the
        same transaction (``capture_batches``), so a batch sent again after
        its commit went through unanswered is recognised.

        On PostgreSQL every batch is logged there, also without an id: its
        transaction id and where its message ids lie, for the live tail
        (:mod:`asterfleet.capture.tail`). The log row is written after the
        messages, so the batch costs no more round trips than before (a
        batch sent again is then rolled back after its COPY: rare).
        """
        if copy_tuples and self.dialect != "postgresql":
            raise ValueError("binary COPY tuples go to PostgreSQL only")
        if not rows and not copy_tuples:
            return True
        rtcp = [block for r in rows if r[0] == RTCP_TAG for block in r[1]]
        if rtcp:
            rows = [r for r in rows if r[0] != RTCP_TAG]
        pg = self.dialect == "postgresql"
        raw = self.engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            days = {r[0] // DAY_US for r in rows}.union(copy_days) if pg else set()
            if pg and self.partitioned:
                self._ensure_partitions(driver, days, ())
            cur = driver.cursor()
            try:
                if pg:
                    if self._ids_issued is None:
                        cur.execute(_IDS_ISSUED_PG)
                        self._ids_issued = int(cur.fetchone()[0])
                    ids_above = self._ids_issued
                elif batch_id is not None:
                    cur.execute(_CLAIM_BATCH_SQLITE, (batch_id, int(time.time() * 1_000_000)))
                    if cur.rowcount == 0:
                        raw.rollback()
                        return False
                if rtcp:
                    cur.executemany(_INSERT_RTCP_PG if pg else _INSERT_RTCP_SQLITE, rtcp)
                if not pg:
                    cur.executemany(self._sqlite_insert, rows)
                elif rows or copy_tuples:
                    # Binary COPY: no text escaping of the raw messages either way.
                    with cur.copy(self._copy_sql) as copy:
                        copy.write(COPY_SIGNATURE)
                        if copy_tuples:
                            copy.write(copy_tuples)
                        if rows:
                            # Row mode: psycopg writes the trailer.
                            copy.set_types(COPY_TYPES)
                            write = copy.write_row
                            for row in rows:
                                write(row)
                        else:
                            copy.write(COPY_TRAILER)
                if pg:
                    # Its ids are the sequence's last ones on this connection.
                    sip = bool(rows or copy_tuples)
                    cur.execute(
                        _LOG_BATCH_PG,
                        (
                            batch_id if batch_id is not None else os.urandom(16),
                            int(time.time() * 1_000_000),
                            ids_above,
                            sip,
                            ids_above,
                            min(days, default=None),
                            max(days, default=None),
                        ),
                    )
                    logged = cur.fetchone()
                    if logged is None:  # stored before
                        raw.rollback()
                        return False
                    last_id = int(logged[0])
            finally:
                cur.close()
            raw.commit()
            if pg:
                self._ids_issued = last_id
        except BaseException:
            try:
                raw.rollback()
            except Exception:
                raw.invalidate()
            raise
        finally:
            raw.close()
        return True

    def forget_batches(self, before_s: float) -> int:
        """Forget the ids of batches stored before ``before_s`` (epoch seconds)."""
        with self.engine.begin() as conn:
            return int(
                conn.exec_driver_sql(
                    "DELETE FROM capture_batches WHERE stored_us < "
                    + ("%s" if self.dialect == "postgresql" else "?"),
                    (int(before_s * 1_000_000),),
                ).rowcount
            )

    def _ensure_partitions(self, driver: Any, days: set[int], more: Iterable[int]) -> None:
        """Make the day partitions of a batch's ``days`` (PostgreSQL), on
        the connection of the batch."""
        days = days.union(more) - self._days
        if not days:
            return
        today = int(time.time() * 1_000_000) // DAY_US
        wanted = [
            d for d in days if today - PARTITION_PAST_DAYS <= d <= today + PARTITION_FUTURE_DAYS
        ]
        for day in sorted(wanted):
            try:
                with driver.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
                    cur.execute("SELECT 1 FROM pg_class WHERE relname = %s", (partition_name(day),))
                    if cur.fetchone() is None:
                        _create_day(cur, day)
                driver.commit()
            except Exception as exc:
                # E.g. rows of that day already in sip_messages_other (stored
                # while the day was beyond the window): they stay there, and
                # so do the day's next rows.
                driver.rollback()
                if type(exc).__name__ in ("OperationalError", "InterfaceError"):
                    raise
                import structlog  # rare, and the CLI's start-up need not pay for it

                structlog.get_logger("asterfleet.capture").warning(
                    "partition_not_made", partition=partition_name(day), error=str(exc)[:200]
                )
        self._days |= days

    def partitions(self) -> list[tuple[str, int | None, int | None]]:
        """The day partitions (PostgreSQL): name, first and last µs (None:
        open-ended), oldest first; ``sip_messages_other`` is not listed."""
        if not self.partitioned:
            return []
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(_LIST_PARTITIONS).all()
        out: list[tuple[str, int | None, int | None]] = []
        for name, bound in rows:
            lo, hi = _parse_bound(bound)
            if lo is None and hi is None:
                continue  # the default partition
            out.append((name, lo, hi))
        out.sort(key=lambda p: (p[1] is not None, p[1] or 0))
        return out

    def drop_partitions_before(self, cutoff_us: int) -> int:
        """Drop every partition whose messages are all older than ``cutoff_us``;
        how many messages went with them."""
        removed = 0
        for name, _lo, hi in self.partitions():
            if hi is None or hi > cutoff_us:
                continue
            with self.engine.begin() as conn:
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
                count = conn.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one()
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
            removed += int(count)
            self._days.clear()
        return removed

    def delete_older_than(self, cutoff_us: int, chunk: int = 50_000) -> int:
        """Delete messages (and RTCP reports) captured before ``cutoff_us``;
        how many messages.

        On PostgreSQL whole day partitions go: a day's messages are kept
        until the whole day is older than the cutoff (at most a day longer
        than asked), and only ``sip_messages_other`` is pruned row by row.
        """
        import sqlalchemy as sa

        from asterfleet.capture.tables import messages, rtcp_reports

        with self.engine.begin() as conn:
            conn.execute(sa.delete(rtcp_reports).where(rtcp_reports.c.ts_us < cutoff_us))
        if self.partitioned:
            removed = self.drop_partitions_before(cutoff_us)
            with self.engine.begin() as conn:
                removed += conn.exec_driver_sql(
                    "DELETE FROM sip_messages_other WHERE ts_us < %s", (cutoff_us,)
                ).rowcount
            return removed
        total = 0
        while True:
            ids = sa.select(messages.c.id).where(messages.c.ts_us < cutoff_us).limit(chunk)
            with self.engine.begin() as conn:
                deleted = conn.execute(sa.delete(messages).where(messages.c.id.in_(ids))).rowcount
            total += deleted
            if deleted < chunk:
                return total

    def size_bytes(self) -> int:
        """Bytes the stored messages take (live data, not free pages)."""
        import sqlalchemy as sa

        from asterfleet.capture.tables import messages

        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
                free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
                size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
                return int((pages - free) * size)
            if self.partitioned:
                return int(conn.exec_driver_sql(_PARTITIONED_SIZE).scalar_one() or 0)
            row = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(sa.func.length(messages.c.raw)), 0),
                )
            ).one()
            return int(row[0]) * ROW_OVERHEAD + int(row[1] or 0)

    def trim_to_size(self, max_bytes: int) -> int:
        """Delete the oldest messages until the store is under ``max_bytes``
        (on PostgreSQL whole day partitions first, oldest first, while more
        than one is left)."""
        import sqlalchemy as sa

        from asterfleet.capture.tables import messages

        deleted = 0
        while self.partitioned and self.size_bytes() > max_bytes:
            parts = self.partitions()
            if len(parts) < 2 or parts[0][2] is None:
                break
            deleted += self.drop_partitions_before(parts[0][2])
        for _ in range(20):
            size = self.size_bytes()
            if size <= max_bytes:
                break
            with self.engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one()
            if not count:
                break
            # Remove the oldest share of rows that brings us 10% under the cap.
            share = min(1.0, (size - max_bytes * 0.9) / size)
            if self.dialect == "postgresql":
                # Once: deleted rows leave the files as large as they were
                # (their space is reused by new rows after VACUUM), so the
                # size would never show the delete.
                deleted += self._delete_oldest_share(share, count)
                break
            n = max(1, int(count * share))
            cutoff = sa.select(messages.c.id).order_by(messages.c.ts_us, messages.c.id).limit(n)
            with self.engine.begin() as conn:
                deleted += conn.execute(
                    sa.delete(messages).where(messages.c.id.in_(cutoff))
                ).rowcount
            if self.dialect == "sqlite":
                with self.engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def _delete_oldest_share(self, share: float, count: int) -> int:
        """Delete about the oldest ``share`` of ``count`` messages (PostgreSQL).
        Capture time has no btree there (a BRIN index, see _PG_INDEXES), so
        the cut is that share's quantile of a sample of some 100,000 rows
        (pages picked at random), and the delete is a time range."""
        percent = min(100.0, max(0.01, 100.0 * 100_000 / max(count, 1)))
        with self.engine.begin() as conn:
            cut = conn.exec_driver_sql(
                "SELECT percentile_disc(%s::float8) WITHIN GROUP (ORDER BY ts_us) "
                "FROM sip_messages TABLESAMPLE SYSTEM (%s::float4)",
                (share, percent),
            ).scalar()
            if cut is None:  # no page picked: the oldest message is the cut
                cut = conn.exec_driver_sql("SELECT min(ts_us) FROM sip_messages").scalar()
            if cut is None:
                return 0
            return int(
                conn.exec_driver_sql(
                    "DELETE FROM sip_messages WHERE ts_us <= %s", (int(cut),)
                ).rowcount
            )

    def apply_retention(self, max_age_s: float | None, max_bytes: int | None) -> int:
        """Age first, then size; the number of messages removed."""
        removed = 0
        if max_age_s is not None:
            removed += self.delete_older_than(int((time.time() - max_age_s) * 1_000_000))
        if max_bytes is not None:
            removed += self.trim_to_size(max_bytes)
        return removed

    def settings_below_capture(self) -> dict[str, str]:
        """PostgreSQL settings below what a capture store wants
        (:mod:`asterfleet.capture.pgsettings`); empty on SQLite."""
        if self.dialect != "postgresql":
            return {}
        from asterfleet.capture.pgsettings import SETTINGS_QUERY, differences

        return differences(self._fetch(SETTINGS_QUERY, "", (), None))

    # -- reading -----------------------------------------------------------

    def count(self) -> int:
        import sqlalchemy as sa

        from asterfleet.capture.tables import messages

        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one())

    def select(self, query: sa.Select[Any]) -> list[Message]:
        with self.reading() as conn:
            return [message_from_row(r) for r in conn.execute(query)]

    def stream_quality(self, call_id: str, clock_hz: int = 8000) -> list[StreamQuality]:
        """A call's streams (by SSRC and reporter), latest report each.

        Jitter and MOS are as stored when the collector decided the report's
        RTP clock (``clock_hz`` > 0, :mod:`asterfleet.capture.mediaclock`),
        the figures the MOS filter and the statistics read; a report whose
        clock is not decided (yet) is read at ``clock_hz`` (its stored
        figures are at 8,000 Hz)."""
        import sqlalchemy as sa

        from asterfleet.capture.rtcp import rescaled
        from asterfleet.capture.tables import rtcp_reports

        t = rtcp_reports.c
        query = sa.select(rtcp_reports).where(t.call_id == call_id).order_by(t.ts_us, t.id)
        latest: dict[tuple[int, str], Any] = {}
        counts: dict[tuple[int, str], int] = {}
        lowest: dict[tuple[int, str], float] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                key = (row.source_ssrc, _hostport(row.src_ip, row.src_port))
                if row.clock_hz:
                    clock, jitter, mos = row.clock_hz, row.jitter_ms, row.mos
                else:
                    clock = clock_hz
                    jitter, mos = rescaled(row.fraction_lost, row.jitter_ms, row.rtt_ms, clock)
                latest[key] = (row, jitter, mos, clock)
                counts[key] = counts.get(key, 0) + 1
                lowest[key] = min(lowest.get(key, 5.0), mos)
        return [
            StreamQuality(
                source_ssrc=key[0],
                reporter=key[1],
                reports=counts[key],
                fraction_lost=row.fraction_lost,
                packets_lost=row.packets_lost,
                jitter_ms=jitter,
                rtt_ms=row.rtt_ms,
                mos=mos,
                min_mos=lowest[key],
                clock_hz=clock,
            )
            for key, (row, jitter, mos, clock) in latest.items()
        ]

    def lowest_mos(self, call_ids: Sequence[str]) -> dict[str, float]:
        """Each call's lowest estimated MOS of any RTCP report, as stored (the
        figure the "MOS below" filter compares); calls without one left out."""
        ids = list(dict.fromkeys(call_ids))
        if not ids:
            return {}
        rows = self._fetch(
            "SELECT call_id, min(mos) FROM rtcp_reports WHERE call_id = ANY(%s) GROUP BY call_id",
            "SELECT call_id, min(mos) FROM rtcp_reports "
            f"WHERE call_id IN ({', '.join('?' for _ in ids)}) GROUP BY call_id",
            [ids] if self.dialect == "postgresql" else ids,
            None,
        )
        return {str(call_id): float(mos) for call_id, mos in rows}

    def messages_of_calls(
        self, call_ids: Sequence[str], conn: sa.Connection | None = None
    ) -> list[Message]:
        """Every message of these calls, in capture order (on ``conn``, a
        :meth:`reading` connection, when the caller holds one)."""
        if not call_ids:
            return []
        ids = list(dict.fromkeys(call_ids))
        # One statement text for any number of calls on PostgreSQL, through
        # the index of the Call-IDs' hashes (see _PG_INDEXES).
        # A Call-ID prunes no day partition: the plan names every one, and
        # planning it took 25-90 ms with 365 of them (1 ms with 8). As a
        # prepared statement it is planned once per connection.
        rows = self._fetch(
            _MESSAGES_OF_CALLS
            + "hashtext(call_id) = ANY(ARRAY(SELECT hashtext(unnest(%s::text[])))) "
            + "AND call_id = ANY(%s)"
            + _IN_CAPTURE_ORDER,
            _MESSAGES_OF_CALLS + f"call_id IN ({', '.join('?' for _ in ids)})" + _IN_CAPTURE_ORDER,
            [ids, ids] if self.dialect == "postgresql" else ids,
            conn,
            prepared=True,
        )
        return [message_from_row(r) for r in rows]


_MESSAGES_OF_CALLS = f"SELECT id, {', '.join(COLUMNS)} FROM sip_messages WHERE "
#: The batch log on PostgreSQL (see :data:`_PG_BATCH_LOG`): the batch's id,
#: its transaction (the column's default), its ids (above the first value,
#: up to the sequence's last value on this connection; none when it holds
#: RTCP reports only) and its UTC days.
_LOG_BATCH_PG = (
    "INSERT INTO capture_batches (batch_id, stored_us, ids_above, last_id, first_day, last_day) "
    "VALUES (%s, %s, %s, CASE WHEN %s THEN currval('sip_messages_id_seq') ELSE %s END, %s, %s) "
    "ON CONFLICT DO NOTHING RETURNING last_id"
)
#: The last id the message sequence gave (any connection): ids given later are above it.
_IDS_ISSUED_PG = (
    "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM sip_messages_id_seq"
)
_CLAIM_BATCH_SQLITE = "INSERT OR IGNORE INTO capture_batches (batch_id, stored_us) VALUES (?, ?)"
_INSERT_RTCP_PG = (
    f"INSERT INTO rtcp_reports ({', '.join(RTCP_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in RTCP_COLUMNS)})"
)
_INSERT_RTCP_SQLITE = (
    f"INSERT INTO rtcp_reports ({', '.join(RTCP_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in RTCP_COLUMNS)})"
)
_IN_CAPTURE_ORDER = " ORDER BY ts_us, id"


@contextlib.contextmanager
def _prepared_on(driver: Any, prepared: bool) -> Iterator[None]:
    """Statements run on a psycopg connection within are prepared (at their
    first run) and reuse their plan. The store's connections prepare nothing
    otherwise: a walk's generic plan could not use a user prefix."""
    if not prepared:
        yield
        return
    saved = driver.prepare_threshold
    driver.prepare_threshold = 0
    try:
        yield
    finally:
        driver.prepare_threshold = saved


#: A pooled connection idle this long is pinged before it is used again.
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle (where a
    server restart would have broken it), not at every checkout as
    ``pool_pre_ping`` does: a Call-ID lookup is then one round trip, not
    two. A broken connection found by the ping is replaced (the pool tries
    again); one that breaks within the second is reported by the query."""
    from sqlalchemy import event, exc

    def fresh(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi)
        except Exception:
            alive = False
        if not alive:
            raise exc.DisconnectionError("the capture database connection went away")

    event.listen(engine, "connect", fresh)
    event.listen(engine, "checkin", fresh)
    event.listen(engine, "checkout", checkout)


def _rename_node_column(engine: Engine) -> None:
    """Databases written before the capture host had its own name call the
    column ``node`` (which, in the fleet, is an Asterisk box)."""
    import sqlalchemy as sa

    inspector = sa.inspect(engine)
    if not inspector.has_table("sip_messages"):
        return
    columns = {c["name"] for c in inspector.get_columns("sip_messages")}
    if "node" in columns and "capture_host" not in columns:
        _migrate(
            engine,
            ["ALTER TABLE sip_messages RENAME COLUMN node TO capture_host"],
            "capture_host",
        )


def _add_opens_call(engine: Engine) -> None:
    """Databases from before the Calls list walked call openings lack the
    column: add it, and mark their requests outside a dialog as openings
    (the To tag was not kept then, so a re-INVITE counts too)."""
    import sqlalchemy as sa

    from asterfleet.capture.tables import opening

    inspector = sa.inspect(engine)
    if not inspector.has_table("sip_messages"):
        return
    if "opens_call" not in {c["name"] for c in inspector.get_columns("sip_messages")}:
        _migrate(
            engine,
            [
                "ALTER TABLE sip_messages ADD COLUMN opens_call BOOLEAN NOT NULL DEFAULT false",
                "UPDATE sip_messages SET opens_call = true WHERE method IS NOT NULL "
                "AND method NOT IN ('ACK', 'CANCEL', 'BYE', 'PRACK', 'UPDATE', 'INFO')",
            ],
            "opens_call",
        )
    with contextlib.suppress(sa.exc.DBAPIError):  # another process made it meanwhile
        opening.create(engine, checkfirst=True)


def _add_rtcp_clock(engine: Engine) -> None:
    """Databases from before RTCP reports had their RTP clock lack the column
    (their reports' figures are at 8,000 Hz): add it, NULL for them, which
    the collector's clock pass decides from the calls' SDP, newest first
    (:mod:`asterfleet.capture.mediaclock`)."""
    import sqlalchemy as sa

    from asterfleet.capture.tables import rtcp_unclocked

    if "clock_hz" not in {c["name"] for c in sa.inspect(engine).get_columns("rtcp_reports")}:
        _migrate(
            engine, ["ALTER TABLE rtcp_reports ADD COLUMN clock_hz INTEGER"], "clock_hz",
            table="rtcp_reports",
        )  # fmt: skip
    with contextlib.suppress(sa.exc.DBAPIError):  # another process made it meanwhile
        rtcp_unclocked.create(engine, checkfirst=True)


def _migrate(
    engine: Engine, statements: Sequence[str], column: str, table: str = "sip_messages"
) -> None:
    """Run one in-place migration; the collector and the console may open an
    old store at the same moment, and the second one finds it done."""
    import sqlalchemy as sa

    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)
    except sa.exc.DBAPIError:
        columns = {c["name"] for c in sa.inspect(engine).get_columns(table)}
        if column not in columns:
            raise


# -- PostgreSQL: partitions by day ------------------------------------------------

#: Advisory lock key taken while partitions are made, converted or dropped.
_PARTITION_LOCK = 0x61737466  # "astf"

_PG_COLUMNS = """
    id bigint NOT NULL DEFAULT nextval('sip_messages_id_seq'),
    ts_us bigint NOT NULL,
    src_ip text NOT NULL,
    src_port integer NOT NULL,
    dst_ip text NOT NULL,
    dst_port integer NOT NULL,
    transport text NOT NULL,
    capture_id bigint NOT NULL,
    capture_host text NOT NULL,
    call_id text NOT NULL,
    method text,
    status integer,
    cseq text NOT NULL,
    from_user text NOT NULL,
    to_user text NOT NULL,
    user_agent text NOT NULL,
    correlation_id text NOT NULL,
    raw bytea NOT NULL,
    opens_call boolean NOT NULL DEFAULT false
"""

#: The partitioned table's indexes (each partition gets its own copy).
#: Index entries are what storing a message costs most after the row itself
#: (``bench/capture_index_cost.py``, ``bench/capture_ingest.py``), so two
#: cheap ones cover every message:
#: - capture time as a BRIN index (a summary per block of pages: messages
#:   arrive in time order), which costs next to nothing to keep; searches
#:   that list messages by time walk back in slices (:mod:`.search`);
#: - the Call-ID as a btree of its 32-bit hash (``hashtext``): an entry of a
#:   few bytes, and the messages of one call share it, so the btree keeps
#:   them as one entry with a list of rows (its deduplication): a call is
#:   indexed about once, not once per message. Queries ask for the hash and
#:   the Call-ID together (:func:`asterfleet.capture.tables.same_call`).
#: Measured in the collector, 30 s at its limit: a btree of the Call-ID
#: text cost 0.85 µs a message more than this one, a hash index 1.6 µs.
#: The rest cover call openings only, one message in seven. Users:
#: ``text_pattern_ops`` so ``LIKE 'abc%'`` is an index range whatever the
#: database's collation.
_PG_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_sip_messages_ts_brin ON sip_messages USING brin (ts_us) "
    "WITH (autosummarize = on)",
    "CREATE INDEX IF NOT EXISTS ix_sip_messages_call_key ON sip_messages ((hashtext(call_id)))",
    # The Calls search's walk, newest first: it reads only this index (the
    # filters on the opening's own fields are in it).
    "CREATE INDEX IF NOT EXISTS ix_sip_messages_opening_ts ON sip_messages "
    "(ts_us, id) INCLUDE (call_id, from_user, to_user, method) WHERE opens_call = true",
    # The live tail of the Calls list: openings stored after a given id.
    "CREATE INDEX IF NOT EXISTS ix_sip_messages_opening_id ON sip_messages (id) "
    "WHERE opens_call = true",
)
#: Indexes of earlier versions, dropped once the ones above are built:
#: btrees of every message's time, Call-ID and id.
_PG_RETIRED_INDEXES = ("ix_sip_messages_ts", "ix_sip_messages_call_id", "ix_sip_messages_id")
#: They carry what the walk reads, so a selective prefix is answered from the
#: index alone (sorted by time afterwards) instead of walking every opening.
_PG_SEARCH_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_sip_messages_from_prefix ON sip_messages "
    "(from_user text_pattern_ops) INCLUDE (ts_us, id, call_id, to_user, method) "
    "WHERE opens_call = true",
    "CREATE INDEX IF NOT EXISTS ix_sip_messages_to_prefix ON sip_messages "
    "(to_user text_pattern_ops) INCLUDE (ts_us, id, call_id, from_user, method) "
    "WHERE opens_call = true",
)

_ALL_PG_INDEXES = (*_PG_INDEXES, *_PG_SEARCH_INDEXES)

_LIST_PARTITIONS = """
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'sip_messages'::regclass
"""

_PARTITIONED_SIZE = """
SELECT sum(pg_total_relation_size(i.inhrelid))
FROM pg_inherits i WHERE i.inhparent = 'sip_messages'::regclass
"""


def partition_name(day: int) -> str:
    """``sip_messages_p20240501`` for a day counted from the epoch (UTC)."""
    return "sip_messages_p" + time.strftime("%Y%m%d", time.gmtime(day * 86_400))


def _parse_bound(bound: str) -> tuple[int | None, int | None]:
    """``FOR VALUES FROM ('1') TO ('2')`` → (1, 2); MINVALUE/MAXVALUE/DEFAULT → None."""
    if "FROM" not in bound:
        return None, None
    lo_text, _, hi_text = bound.split("FROM", 1)[1].partition(" TO ")

    def value(text: str) -> int | None:
        text = text.strip().strip("()").strip("'")
        return None if text.upper() in ("MINVALUE", "MAXVALUE") else int(text)

    return value(lo_text), value(hi_text)


def _create_day(cur: Any, day: int) -> None:
    lo, hi = day * DAY_US, (day + 1) * DAY_US
    cur.execute(
        f'CREATE TABLE IF NOT EXISTS "{partition_name(day)}" PARTITION OF sip_messages '
        f"FOR VALUES FROM ({lo}) TO ({hi})"
    )


_SCHEMA_PROBE = """
SELECT (SELECT relkind FROM pg_class WHERE oid = to_regclass('sip_messages')) = 'p'
   AND to_regclass('ix_sip_messages_from_prefix') IS NOT NULL
   AND to_regclass('ix_sip_messages_opening_ts') IS NOT NULL
   AND to_regclass('ix_sip_messages_call_key') IS NOT NULL
   AND to_regclass('ix_sip_messages_ts_brin') IS NOT NULL
   AND to_regclass('ix_sip_messages_opening_id') IS NOT NULL
   AND to_regclass('ix_sip_messages_call_id') IS NULL
   AND to_regclass('rtcp_reports') IS NOT NULL
   AND to_regclass('ix_rtcp_reports_unclocked') IS NOT NULL
   AND to_regclass('capture_batches') IS NOT NULL
   AND to_regclass('ix_capture_batches_xact') IS NOT NULL
"""

#: The same question on SQLite: every column, index and table this version makes.
_SQLITE_SCHEMA_PROBE = """
SELECT (SELECT count(*) FROM pragma_table_info('sip_messages')
        WHERE name IN ('capture_host', 'opens_call')) = 2
   AND EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'ix_sip_messages_opening_ts')
   AND EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'rtcp_reports')
   AND EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'ix_rtcp_reports_unclocked')
   AND EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'capture_batches')
"""


def _pg_schema_current(engine: Engine) -> bool:
    """Partitioned, with every index and table this version makes."""
    with engine.connect() as conn:
        return bool(conn.exec_driver_sql(_SCHEMA_PROBE).scalar())


def _relkind(conn: sa.Connection, name: str) -> str | None:
    kind = conn.exec_driver_sql(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %s AND n.nspname = current_schema()",
        (name,),
    ).scalar()
    return None if kind is None else str(kind)


def _create_partitioned(engine: Engine) -> None:
    """A new database: the partitioned table, its indexes and the default partition."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        if _relkind(conn, "sip_messages") is None:
            conn.exec_driver_sql("CREATE SEQUENCE IF NOT EXISTS sip_messages_id_seq")
            conn.exec_driver_sql(
                f"CREATE TABLE sip_messages ({_PG_COLUMNS}) PARTITION BY RANGE (ts_us)"
            )
            conn.exec_driver_sql("ALTER SEQUENCE sip_messages_id_seq OWNED BY sip_messages.id")
            for sql in _ALL_PG_INDEXES:
                conn.exec_driver_sql(sql)
            conn.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS sip_messages_other PARTITION OF sip_messages DEFAULT"
            )
    from asterfleet.capture.tables import batches, rtcp_reports

    rtcp_reports.create(engine, checkfirst=True)
    batches.create(engine, checkfirst=True)


def _partition_existing(engine: Engine) -> bool:
    """Convert a store made before partitioning (every row kept); whether
    the table is partitioned now (False: no table yet, with ``create=False``)."""
    with engine.connect() as conn:
        kind = _relkind(conn, "sip_messages")
    if kind is None:
        return False
    if kind == "p":
        return True
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        if _relkind(conn, "sip_messages") == "p":  # another process was first
            return True
        newest = conn.exec_driver_sql("SELECT max(ts_us) FROM sip_messages").scalar()
        upper = ((int(newest) // DAY_US) + 1) * DAY_US if newest is not None else 0
        legacy = "sip_messages_legacy"
        conn.exec_driver_sql(f"ALTER TABLE sip_messages RENAME TO {legacy}")
        # Its indexes keep their names unless renamed: the new table's take them.
        for (index,) in conn.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s",
            (legacy, "ix\\_sip\\_messages\\_%"),
        ).all():
            renamed = index.replace("ix_sip_messages_", "ix_sip_messages_legacy_", 1)
            conn.exec_driver_sql(f'ALTER INDEX "{index}" RENAME TO "{renamed}"')
        # The id sequence must outlive the old table (retention drops it).
        conn.exec_driver_sql("ALTER SEQUENCE sip_messages_id_seq OWNED BY NONE")
        conn.exec_driver_sql(
            f"ALTER TABLE {legacy} ALTER COLUMN id SET DEFAULT nextval('sip_messages_id_seq')"
        )
        conn.exec_driver_sql(
            f"CREATE TABLE sip_messages ({_PG_COLUMNS}) PARTITION BY RANGE (ts_us)"
        )
        conn.exec_driver_sql("ALTER SEQUENCE sip_messages_id_seq OWNED BY sip_messages.id")
        for sql in _PG_INDEXES:
            conn.exec_driver_sql(sql)
        # Everything stored so far, up to the end of its newest day, stays where it is.
        conn.exec_driver_sql(
            f"ALTER TABLE sip_messages ATTACH PARTITION {legacy} "
            f"FOR VALUES FROM (MINVALUE) TO ({upper})"
        )
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS sip_messages_other PARTITION OF sip_messages DEFAULT"
        )
    return True


def _ensure_indexes(engine: Engine) -> None:
    """Bring an older store's indexes to this version's (a writing store
    does it once; a store opened read-only reads either). New ones are built
    before the retired ones go, so a search is never without its index; on
    a big store the build takes a while (logged)."""
    import sqlalchemy as sa
    import structlog

    log = structlog.get_logger("asterfleet.capture")
    with engine.connect() as conn:
        present = {
            name
            for (name,) in conn.exec_driver_sql(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'sip_messages'"
            ).all()
        }
    wanted = {sql.split("EXISTS ", 1)[1].split(" ", 1)[0]: sql for sql in _ALL_PG_INDEXES}
    missing = [name for name in wanted if name not in present]
    retired = [name for name in _PG_RETIRED_INDEXES if name in present]
    if not missing and not retired:
        return
    log.info("capture_store_reindexing", building=missing, dropping=retired)
    started = time.monotonic()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for name in missing:
                conn.exec_driver_sql(wanted[name])
            for name in retired:
                conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')
            # The planner's statistics of the new index's expression (the hashes).
            conn.exec_driver_sql("ANALYZE sip_messages")
    except sa.exc.DBAPIError as exc:
        # The store still works on the indexes it has; the next writer to
        # open it tries again.
        log.warning("capture_store_reindex_failed", error=str(exc).splitlines()[0][:200])
        return
    log.info("capture_store_reindexed", seconds=round(time.monotonic() - started, 1))


#: The batch log's PostgreSQL columns, added to ``capture_batches`` (see
#: :meth:`Store.insert_rows`): the transaction that stored the batch (an
#: ``xid8``, which never wraps around), the range its message ids lie in
#: (above ``ids_above``, up to ``last_id``: other writers' ids interleave),
#: and the UTC days of its messages (so a look-up reads their partitions
#: only). The live tail reads it by transaction (:mod:`.tail`). Rows a
#: writer of an earlier version logs have the transaction but no range.
#: The ranges hold while ``sip_messages_id_seq`` caches no values (its
#: default): a cached id would be given after ids above it.
_PG_BATCH_LOG = (
    "ALTER TABLE capture_batches ADD COLUMN IF NOT EXISTS xact xid8",
    "ALTER TABLE capture_batches ALTER COLUMN xact SET DEFAULT pg_current_xact_id()",
    "ALTER TABLE capture_batches ADD COLUMN IF NOT EXISTS ids_above bigint",
    "ALTER TABLE capture_batches ADD COLUMN IF NOT EXISTS last_id bigint",
    "ALTER TABLE capture_batches ADD COLUMN IF NOT EXISTS first_day integer",
    "ALTER TABLE capture_batches ADD COLUMN IF NOT EXISTS last_day integer",
    "CREATE INDEX IF NOT EXISTS ix_capture_batches_xact ON capture_batches (xact)",
)


def _ensure_batch_log(engine: Engine) -> None:
    """Give ``capture_batches`` the batch log's columns (PostgreSQL): a new
    store, or one of an earlier version (its rows get none: no rewrite)."""
    with engine.connect() as conn:
        if conn.exec_driver_sql("SELECT to_regclass('ix_capture_batches_xact')").scalar():
            return
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        for sql in _PG_BATCH_LOG:
            conn.exec_driver_sql(sql)
