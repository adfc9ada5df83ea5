"""Build logs: stored in chunks keyed by character offset, so a reader can
resume exactly where it stopped (the console's SSE ``Last-Event-ID``)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterable

from sqlalchemy import Engine, func, insert, select

from asterfleet.factory.schema import factory_build_logs, factory_builds

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@", re.I)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Remove every known secret, and user:password@ in URLs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "********")
    return _URL_CREDENTIALS.sub(r"\g<scheme>********@", text)


class BuildLog:
    """Appends to one build's log; thread-safe, secrets redacted on write."""

    def __init__(self, engine: Engine, build_id: int, secrets: Iterable[str] = ()) -> None:
        self.engine = engine
        self.build_id = build_id
        self.secrets: list[str] = list(secrets)
        self._lock = threading.Lock()
        with engine.connect() as conn:
            last = conn.execute(
                select(
                    func.max(factory_build_logs.c.offset + func.length(factory_build_logs.c.data))
                ).where(factory_build_logs.c.build_id == build_id)
            ).scalar()
        self.offset = int(last or 0)

    def add_secret(self, secret: str) -> None:
        self.secrets.append(secret)

    def write(self, text: str) -> None:
        if not text:
            return
        clean = redact(text, self.secrets)
        with self._lock, self.engine.begin() as conn:
            conn.execute(
                insert(factory_build_logs).values(
                    build_id=self.build_id, offset=self.offset, data=clean
                )
            )
            self.offset += len(clean)

    def line(self, text: str) -> None:
        self.write(text.rstrip("\n") + "\n")


def read_log(engine: Engine, build_id: int, offset: int = 0) -> tuple[str, int]:
    """Log text from ``offset`` on, and the offset to resume from."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(factory_build_logs.c.offset, factory_build_logs.c.data)
            .where(
                factory_build_logs.c.build_id == build_id,
                factory_build_logs.c.offset + func.length(factory_build_logs.c.data) > offset,
            )
            .order_by(factory_build_logs.c.offset)
        ).all()
    parts = []
    end = offset
    for row in rows:
        start = max(0, offset - int(row.offset))
        parts.append(row.data[start:])
        end = int(row.offset) + len(row.data)
    return "".join(parts), end


async def stream_log(
    engine: Engine, build_id: int, offset: int = 0, poll: float = 0.5, limit: float = 3600.0
) -> AsyncIterator[tuple[int, str]]:
    """Yield (offset after chunk, chunk) as the log grows, until the build
    has finished and everything is sent (or ``limit`` seconds pass).

    The console turns each item into an SSE event whose id is the offset;
    a reconnecting browser resumes with that id.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        text, end = await asyncio.to_thread(read_log, engine, build_id, offset)
        if text:
            offset = end
            yield offset, text
            continue
        state = await asyncio.to_thread(_state, engine, build_id)
        if state in ("passed", "failed", "cancelled", None):
            text, end = await asyncio.to_thread(read_log, engine, build_id, offset)
            if text:
                yield end, text
            return
        await asyncio.sleep(poll)


def _state(engine: Engine, build_id: int) -> str | None:
    with engine.connect() as conn:
        value = conn.execute(
            select(factory_builds.c.state).where(factory_builds.c.id == build_id)
        ).scalar()
    return None if value is None else str(value)
