"""The persistent build queue.

Builds live in ``factory_builds``; the queue is the rows in state
``queued``. On PostgreSQL workers on several machines claim with
``SELECT … FOR UPDATE SKIP LOCKED`` (the broker is the database itself);
on SQLite (one machine) a conditional UPDATE makes the claim atomic.
A trigger for a knot and ref that already has a queued build joins it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update

from asterfleet.errors import UsageError
from asterfleet.factory.db import as_utc, is_postgres, utcnow
from asterfleet.factory.schema import factory_builds, factory_knots

STATES = ("queued", "running", "testing", "pushing", "passed", "failed", "cancelled")
ACTIVE = ("running", "testing", "pushing")
FINISHED = ("passed", "failed", "cancelled")


@dataclass(frozen=True)
class Build:
    id: int
    knot: str
    number: int
    ref: str
    sha: str | None
    state: str
    reason: str | None
    triggers: tuple[str, ...]
    worker: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    image: str | None
    digest: str | None
    tags: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "knot": self.knot,
            "number": self.number,
            "ref": self.ref,
            "sha": self.sha,
            "state": self.state,
            "reason": self.reason,
            "triggers": list(self.triggers),
            "worker": self.worker,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "image": self.image,
            "digest": self.digest,
            "tags": list(self.tags),
        }


def _build(row: Any) -> Build:
    return Build(
        id=row.id,
        knot=row.knot,
        number=row.number,
        ref=row.ref,
        sha=row.sha,
        state=row.state,
        reason=row.reason,
        triggers=tuple(row.triggers),
        worker=row.worker,
        created_at=as_utc(row.created_at) or row.created_at,
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at),
        image=row.image,
        digest=row.digest,
        tags=tuple(row.tags or ()),
    )


@dataclass(frozen=True)
class Enqueued:
    build: Build
    joined: bool


def enqueue(engine: Engine, knot: str, ref: str, sha: str | None, trigger: str) -> Enqueued:
    """Queue a build of ``knot`` at ``ref`` (``sha`` if known), or join the
    one already queued for that knot and ref (taking the newer sha)."""
    now = utcnow()
    with engine.begin() as conn:
        # Lock the knot row first: on PostgreSQL a row lock, on SQLite the
        # write lock; either way numbering and joining are serialised.
        locked = conn.execute(
            update(factory_knots)
            .where(factory_knots.c.name == knot)
            .values(next_number=factory_knots.c.next_number)
        )
        if locked.rowcount == 0:
            raise UsageError(f"knot {knot!r} does not exist: see 'asterfleet knot ls'")
        queued = conn.execute(
            select(factory_builds).where(
                factory_builds.c.knot == knot,
                factory_builds.c.ref == ref,
                factory_builds.c.state == "queued",
            )
        ).first()
        if queued is not None:
            triggers = [*queued.triggers, trigger]
            conn.execute(
                update(factory_builds)
                .where(factory_builds.c.id == queued.id)
                .values(triggers=triggers, sha=sha or queued.sha)
            )
            row = conn.execute(select(factory_builds).where(factory_builds.c.id == queued.id)).one()
            return Enqueued(_build(row), joined=True)
        number = conn.execute(
            select(factory_knots.c.next_number).where(factory_knots.c.name == knot)
        ).scalar_one()
        conn.execute(
            update(factory_knots).where(factory_knots.c.name == knot).values(next_number=number + 1)
        )
        result = conn.execute(
            insert(factory_builds).values(
                knot=knot,
                number=number,
                ref=ref,
                sha=sha,
                state="queued",
                triggers=[trigger],
                created_at=now,
                tags=[],
                cancel_requested=False,
            )
        )
        (build_id,) = result.inserted_primary_key or (None,)
        row = conn.execute(select(factory_builds).where(factory_builds.c.id == build_id)).one()
        return Enqueued(_build(row), joined=False)


def claim(engine: Engine, worker: str) -> Build | None:
    """Take the oldest queued build for ``worker``; None when the queue is empty."""
    now = utcnow()
    for _ in range(20):  # bounded retries when another worker wins a race
        with engine.begin() as conn:
            query = (
                select(factory_builds.c.id)
                .where(factory_builds.c.state == "queued")
                .order_by(factory_builds.c.id)
                .limit(1)
            )
            if is_postgres(engine):
                query = query.with_for_update(skip_locked=True)
            candidate = conn.execute(query).scalar()
            if candidate is None:
                return None
            done = conn.execute(
                update(factory_builds)
                .where(factory_builds.c.id == candidate, factory_builds.c.state == "queued")
                .values(state="running", worker=worker, started_at=now, heartbeat_at=now)
            )
            if done.rowcount == 1:
                row = conn.execute(
                    select(factory_builds).where(factory_builds.c.id == candidate)
                ).one()
                return _build(row)
    return None


def last_built_sha(engine: Engine, knot: str, ref: str) -> str | None:
    """The commit of the newest passed build of ``knot`` at ``ref``."""
    with engine.connect() as conn:
        return conn.execute(
            select(factory_builds.c.sha)
            .where(
                factory_builds.c.knot == knot,
                factory_builds.c.ref == ref,
                factory_builds.c.state == "passed",
                factory_builds.c.sha.is_not(None),
            )
            .order_by(factory_builds.c.number.desc())
            .limit(1)
        ).scalar_one_or_none()


def get_build(engine: Engine, knot: str, number: int) -> Build:
    with engine.connect() as conn:
        row = conn.execute(
            select(factory_builds).where(
                factory_builds.c.knot == knot, factory_builds.c.number == number
            )
        ).first()
    if row is None:
        raise UsageError(f"build {knot}#{number} does not exist: see 'asterfleet knot show {knot}'")
    return _build(row)


def build_by_id(engine: Engine, build_id: int) -> Build:
    with engine.connect() as conn:
        row = conn.execute(select(factory_builds).where(factory_builds.c.id == build_id)).one()
    return _build(row)


def build_of_digest(engine: Engine, digest: str) -> dict[str, Any] | None:
    """The newest build that pushed ``digest`` (knot, number, id), if any."""
    with engine.connect() as conn:
        row = conn.execute(
            select(factory_builds.c.knot, factory_builds.c.number, factory_builds.c.id)
            .where(factory_builds.c.digest == digest)
            .order_by(factory_builds.c.id.desc())
        ).first()
    return None if row is None else {"knot": row.knot, "number": row.number, "id": row.id}


def list_builds(engine: Engine, knot: str | None = None, limit: int = 50) -> list[Build]:
    query = select(factory_builds).order_by(factory_builds.c.id.desc()).limit(limit)
    if knot is not None:
        query = query.where(factory_builds.c.knot == knot)
    with engine.connect() as conn:
        return [_build(r) for r in conn.execute(query)]


def set_state(engine: Engine, build_id: int, state: str, **values: Any) -> None:
    assert state in STATES, state
    if state in FINISHED:
        values.setdefault("finished_at", utcnow())
    with engine.begin() as conn:
        conn.execute(
            update(factory_builds)
            .where(factory_builds.c.id == build_id)
            .values(state=state, heartbeat_at=utcnow(), **values)
        )


def heartbeat(engine: Engine, build_id: int) -> bool:
    """Record that the build is alive; returns whether cancel was requested."""
    with engine.begin() as conn:
        conn.execute(
            update(factory_builds)
            .where(factory_builds.c.id == build_id)
            .values(heartbeat_at=utcnow())
        )
        return bool(
            conn.execute(
                select(factory_builds.c.cancel_requested).where(factory_builds.c.id == build_id)
            ).scalar()
        )


def cancel(engine: Engine, knot: str, number: int) -> Build:
    """Cancel a queued build now, or ask the worker running it to stop."""
    build = get_build(engine, knot, number)
    with engine.begin() as conn:
        if build.state == "queued":
            conn.execute(
                update(factory_builds)
                .where(factory_builds.c.id == build.id, factory_builds.c.state == "queued")
                .values(
                    state="cancelled", reason="cancelled before it started", finished_at=utcnow()
                )
            )
        elif build.state in ACTIVE:
            conn.execute(
                update(factory_builds)
                .where(factory_builds.c.id == build.id)
                .values(cancel_requested=True)
            )
        else:
            raise UsageError(f"build {knot}#{number} already finished ({build.state})")
    return get_build(engine, knot, number)


def retry(engine: Engine, knot: str, number: int) -> Enqueued:
    build = get_build(engine, knot, number)
    if build.state not in FINISHED:
        raise UsageError(f"build {knot}#{number} is {build.state}: only finished builds retry")
    return enqueue(engine, knot, build.ref, build.sha, f"retry:#{number}")


def recover(
    engine: Engine,
    own_workers: tuple[str, ...] = (),
    stale_after: dt.timedelta = dt.timedelta(seconds=60),
) -> list[Build]:
    """Fail builds interrupted by a crash: those held by one of our own
    (restarted) worker ids, and those whose heartbeat went silent."""
    now = utcnow()
    failed: list[Build] = []
    with engine.begin() as conn:
        rows = conn.execute(select(factory_builds).where(factory_builds.c.state.in_(ACTIVE))).all()
        for row in rows:
            beat = as_utc(row.heartbeat_at) or as_utc(row.started_at)
            if row.worker in own_workers:
                reason = f"interrupted: worker {row.worker} restarted during {row.state}"
            elif beat is None or now - beat > stale_after:
                reason = f"interrupted: worker {row.worker} stopped sending heartbeats"
            else:
                continue
            conn.execute(
                update(factory_builds)
                .where(factory_builds.c.id == row.id, factory_builds.c.state == row.state)
                .values(state="failed", reason=reason, finished_at=now)
            )
            failed.append(_build(row))
    return failed
