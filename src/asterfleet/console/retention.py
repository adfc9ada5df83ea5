"""Retention of the fleet's history in the console's database: the events
and the address sightings that name a call's hosts and explain what
happened to its node. Kept as long as the captured calls they explain: give
the console's ``--history-retention`` the capture server's ``--retention``.
Without it nothing is deleted (as the capture store keeps everything without
``--retention``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
import structlog

from asterfleet.console import addressbook, eventlog
from asterfleet.db import Database

log = structlog.get_logger("asterfleet.console.retention")

#: How often the history is trimmed (the capture server's default is 60 s;
#: the fleet's history grows far slower).
TRIM_INTERVAL_S = 600.0


@dataclass(frozen=True)
class Trimmed:
    events: int
    addresses: int


def trim_history(db: Database, cluster: str, before: float) -> Trimmed:
    """Delete what ended before ``before`` (see eventlog.trim and addressbook.trim)."""
    return Trimmed(eventlog.trim(db, cluster, before), addressbook.trim(db, cluster, before))


async def keep_trimmed(
    db: Database,
    cluster: str,
    retention_s: float,
    on_trim: Callable[[Trimmed], None] = lambda _t: None,
    interval_s: float = TRIM_INTERVAL_S,
    clock: Callable[[], float] = time.time,
) -> None:
    """Trim the history every ``interval_s``, the first time at once (runs
    until cancelled); a database error is logged and tried again next time."""
    while True:
        try:
            done = await asyncio.to_thread(trim_history, db, cluster, clock() - retention_s)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("history_trim_failed", error=str(exc).splitlines()[0])
        else:
            on_trim(done)
            if done.events or done.addresses:
                log.info(
                    "history_trimmed",
                    cluster=cluster,
                    events=done.events,
                    addresses=done.addresses,
                    retention_s=retention_s,
                )
        await asyncio.sleep(interval_s)
