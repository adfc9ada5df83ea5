"""The Dockerfile a build used, kept beside the build (the console shows it
on the tags the build pushed)."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select

from asterfleet.factory.schema import factory_dockerfiles

MAX_CHARS = 256 * 1024  # a Dockerfile bigger than this is not one to read in a browser


def store_dockerfile(engine: Engine, build_id: int, path: str, text: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(factory_dockerfiles).where(factory_dockerfiles.c.build_id == build_id))
        conn.execute(
            insert(factory_dockerfiles).values(build_id=build_id, path=path, text=text[:MAX_CHARS])
        )


def dockerfile_of(engine: Engine, build_id: int) -> tuple[str, str] | None:
    """(path in the repository, text) of the Dockerfile a build used."""
    with engine.connect() as conn:
        row = conn.execute(
            select(factory_dockerfiles.c.path, factory_dockerfiles.c.text).where(
                factory_dockerfiles.c.build_id == build_id
            )
        ).first()
    return None if row is None else (str(row.path), str(row.text))
