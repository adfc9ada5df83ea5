"""Which errors of a batch's write mean "the database went away" (the
writer waits for it and stores the batch then) rather than "this batch is
refused" (dropped, counted): a TCP message must never be dropped because
its connection was closed under it."""

from __future__ import annotations

import sqlite3

import psycopg.errors
import pytest

from asterfleet.capture.collector import _is_connection_error


@pytest.mark.parametrize(
    ("exc", "away"),
    [
        # PostgreSQL stopped: its idle connections are closed with 57P01, a
        # subclass of OperationalError (a batch was refused for it, before).
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
         True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.OperationalError("connection refused"), True),
        (psycopg.InterfaceError("the connection is closed"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (ConnectionResetError(), True),
        # The batch itself is wrong: refused, not retried for ever.
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.errors.NumericValueOutOfRange("integer out of range"), False),
        (ValueError("bad row"), False),
    ],
)  # fmt: skip
def test_errors_that_mean_the_database_went_away(exc: BaseException, away: bool) -> None:
    assert _is_connection_error(exc) is away
