"""Knots in the database: add, list, show, edit, remove.

Their secrets are sealed on the way in and opened on the way out
(:mod:`asterfleet.factory.knot_secrets`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from asterfleet.errors import UsageError
from asterfleet.factory.db import utcnow
from asterfleet.factory.knot import Knot, validate_knot
from asterfleet.factory.knot_secrets import open_spec, seal_spec
from asterfleet.factory.schema import factory_builds, factory_knots


def add_knot(engine: Engine, knot: Knot) -> None:
    now = utcnow()
    with engine.begin() as conn:
        if conn.execute(
            select(factory_knots.c.name).where(factory_knots.c.name == knot.name)
        ).first():
            raise UsageError(f"knot {knot.name!r} already exists: use 'asterfleet knot edit'")
        conn.execute(
            insert(factory_knots).values(
                name=knot.name,
                spec=seal_spec(knot.model_dump(mode="json"), engine),
                next_number=1,
                created_at=now,
                updated_at=now,
            )
        )


def get_knot(engine: Engine, name: str) -> Knot:
    with engine.connect() as conn:
        row = conn.execute(select(factory_knots.c.spec).where(factory_knots.c.name == name)).first()
    if row is None:
        raise UsageError(f"knot {name!r} does not exist: see 'asterfleet knot ls'")
    return Knot.model_validate(open_spec(row.spec, engine, name))


def list_knots(engine: Engine) -> list[Knot]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(factory_knots.c.name, factory_knots.c.spec).order_by(factory_knots.c.name)
        ).all()
    return [Knot.model_validate(open_spec(r.spec, engine, r.name)) for r in rows]


def edit_knot(engine: Engine, name: str, changes: dict[str, Any]) -> Knot:
    """Apply ``changes`` (top-level fields; the fields of ``triggers`` and
    ``hooks`` one by one, build args whole) and validate."""
    current = get_knot(engine, name).model_dump(mode="json")
    for key, value in changes.items():
        if key in ("triggers", "hooks") and isinstance(value, dict):
            current[key] = {**current[key], **value}
        else:
            current[key] = value
    if current.get("name") != name:
        raise UsageError("knot name cannot be changed: add a new knot and remove this one")
    knot = validate_knot(current)
    with engine.begin() as conn:
        conn.execute(
            update(factory_knots)
            .where(factory_knots.c.name == name)
            .values(
                spec=seal_spec(knot.model_dump(mode="json"), engine),
                updated_at=utcnow(),
            )
        )
    return knot


def remove_knot(engine: Engine, name: str) -> None:
    get_knot(engine, name)
    with engine.begin() as conn:
        active = conn.execute(
            select(factory_builds.c.number).where(
                factory_builds.c.knot == name,
                factory_builds.c.state.in_(("running", "testing", "pushing")),
            )
        ).first()
        if active:
            raise UsageError(f"knot {name!r} has build #{active.number} running: cancel it first")
        conn.execute(delete(factory_builds).where(factory_builds.c.knot == name))
        conn.execute(delete(factory_knots).where(factory_knots.c.name == name))
