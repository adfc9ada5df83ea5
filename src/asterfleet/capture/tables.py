"""The capture store's tables as SQLAlchemy Core objects: ``sip_messages``
and ``rtcp_reports``, for SQLite and for the queries built on them.

Kept apart from :mod:`asterfleet.capture.store` so that opening a store and
reading a call (``asterfleet capture search --call-id``) does not import
SQLAlchemy; the pager, the message search and the statistics build their
queries on these. PostgreSQL's partitioned table and its indexes are made
by the DDL in the store (``_PG_COLUMNS``, ``_PG_INDEXES``), which must stay
in step with these columns; the indexes below are SQLite's.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()
messages = sa.Table(
    "sip_messages",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("src_ip", sa.Text, nullable=False),
    sa.Column("src_port", sa.Integer, nullable=False),
    sa.Column("dst_ip", sa.Text, nullable=False),
    sa.Column("dst_port", sa.Integer, nullable=False),
    sa.Column("transport", sa.Text, nullable=False),
    sa.Column("capture_id", sa.BigInteger, nullable=False),
    sa.Column("capture_host", sa.Text, nullable=False),
    sa.Column("call_id", sa.Text, nullable=False),
    sa.Column("method", sa.Text),
    sa.Column("status", sa.Integer),
    sa.Column("cseq", sa.Text, nullable=False),
    sa.Column("from_user", sa.Text, nullable=False),
    sa.Column("to_user", sa.Text, nullable=False),
    sa.Column("user_agent", sa.Text, nullable=False),
    sa.Column("correlation_id", sa.Text, nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    # A request without a To tag: the message the Calls list walks (see sip_index).
    sa.Column("opens_call", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_sip_messages_ts", "ts_us"),
    sa.Index("ix_sip_messages_call_id", "call_id"),
    sa.Index("ix_sip_messages_from_user", "from_user"),
    sa.Index("ix_sip_messages_to_user", "to_user"),
)

rtcp_reports = sa.Table(
    "rtcp_reports",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("ts_us", sa.BigInteger, nullable=False),
    sa.Column("call_id", sa.Text, nullable=False),
    sa.Column("capture_host", sa.Text, nullable=False),
    sa.Column("src_ip", sa.Text, nullable=False),
    sa.Column("src_port", sa.Integer, nullable=False),
    sa.Column("dst_ip", sa.Text, nullable=False),
    sa.Column("dst_port", sa.Integer, nullable=False),
    sa.Column("ssrc", sa.BigInteger, nullable=False),
    sa.Column("report_type", sa.Integer, nullable=False),
    sa.Column("source_ssrc", sa.BigInteger, nullable=False),
    sa.Column("fraction_lost", sa.Float, nullable=False),
    sa.Column("packets_lost", sa.BigInteger, nullable=False),
    sa.Column("jitter_ms", sa.Float, nullable=False),
    sa.Column("rtt_ms", sa.Float),
    sa.Column("mos", sa.Float, nullable=False),
    # The RTP clock rate jitter_ms and mos are at (asterfleet.capture.mediaclock):
    # the codec's from the call's SDP answer; 0: the SDP does not tell (8,000 Hz
    # assumed); NULL: not decided yet, or stored before the column (8,000 Hz).
    sa.Column("clock_hz", sa.Integer),
    sa.Index("ix_rtcp_reports_call_id", "call_id", "mos"),
    sa.Index("ix_rtcp_reports_ts", "ts_us"),
)

#: The reports whose clock is not decided yet, newest first (a small index:
#: the collector decides a report's clock when it stores it, or soon after).
rtcp_unclocked = sa.Index(
    "ix_rtcp_reports_unclocked",
    rtcp_reports.c.ts_us,
    sqlite_where=rtcp_reports.c.clock_hz.is_(None),
    postgresql_where=rtcp_reports.c.clock_hz.is_(None),
)

#: The batches stored lately, by the id the collector gave each (see
#: ``Store.insert_rows``): a batch sent again is recognised, not stored twice.
#: On PostgreSQL it is also the batch log the live tail reads, with more
#: columns (the store's ``_PG_BATCH_LOG``).
batches = sa.Table(
    "capture_batches",
    metadata,
    sa.Column("batch_id", sa.LargeBinary, primary_key=True),
    sa.Column("stored_us", sa.BigInteger, nullable=False),
)

#: The Calls list's walk: call openings, newest first (covering the walk's columns).
opening = sa.Index(
    "ix_sip_messages_opening_ts",
    messages.c.ts_us,
    messages.c.id,
    messages.c.call_id,
    sqlite_where=messages.c.opens_call == sa.true(),
    postgresql_where=messages.c.opens_call == sa.true(),
)


def same_call(column: Any, other: Any, dialect: str) -> sa.ColumnElement[bool]:
    """``column`` (a messages Call-ID column) holds the Call-ID ``other``
    (a value or another column). On PostgreSQL every message's Call-ID is
    indexed by its hash (``ix_sip_messages_call_key``): the condition names
    the hash too, so the index is used."""
    match: sa.ColumnElement[bool] = column == other
    if dialect != "postgresql":
        return match
    return sa.and_(sa.func.hashtext(column) == sa.func.hashtext(other), match)


def in_calls(column: Any, call_ids: Any, dialect: str) -> sa.ColumnElement[bool]:
    """``column`` holds one of ``call_ids`` (a list of Call-IDs, or a
    subquery of one column of them), through the hash index on PostgreSQL
    (see :func:`same_call`)."""
    match: sa.ColumnElement[bool] = column.in_(call_ids)
    if dialect != "postgresql":
        return match
    if isinstance(call_ids, (list, tuple)):
        hashes: Any = [sa.func.hashtext(sa.literal(i, sa.Text)) for i in call_ids]
    else:
        inner = call_ids.subquery()
        hashes = sa.select(sa.func.hashtext(next(iter(inner.c))))
    return sa.and_(sa.func.hashtext(column).in_(hashes), match)
