"""A knot's secrets in the factory's database: its webhook secret and its
secret build args, sealed (:mod:`asterfleet.sealing`) with a key file kept
outside the database.

The store seals them on every write and opens them on every read, so the
rest of the code only ever sees a :class:`~asterfleet.factory.knot.Knot`
with clear values (and masks them in every output: see
:func:`asterfleet.factory.knot_input.public_spec`).
"""

from __future__ import annotations

import copy
import os
import weakref
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine, select, update

from asterfleet.factory.schema import factory_knots
from asterfleet.sealing import Key, is_sealed, load_key

KEY_ENV = "ASTERFLEET_FACTORY_KEY"
DEFAULT_KEY = Path.home() / ".local/share/asterfleet/factory.key"

_memory_keys: weakref.WeakKeyDictionary[Engine, Key] = weakref.WeakKeyDictionary()


def key_path(engine: Engine) -> Path | None:
    """Where the key of ``engine``'s secrets is: ``ASTERFLEET_FACTORY_KEY``;
    else beside a SQLite file (``factory.db`` -> ``factory.key``); else (a
    PostgreSQL store, shared by workers on several machines: copy the file
    to each) ``~/.local/share/asterfleet/factory.key``. None for an
    in-memory SQLite store, whose key lives as long as the process."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            return None
        return Path(database).with_suffix(".key")
    return DEFAULT_KEY


def store_key(engine: Engine) -> Key:
    """The key that seals and opens the knots' secrets in ``engine``."""
    path = key_path(engine)
    if path is not None:
        return load_key(path)
    key = _memory_keys.get(engine)
    if key is None:
        key = _memory_keys[engine] = Key(Fernet(Fernet.generate_key()), Path("(memory)"))
    return key


def _secret_values(spec: dict[str, Any]) -> list[tuple[dict[str, Any], str, str]]:
    """(container, key, field name for errors) of every secret in ``spec``."""
    places: list[tuple[dict[str, Any], str, str]] = []
    triggers = spec.get("triggers")
    if isinstance(triggers, dict) and isinstance(triggers.get("webhook_secret"), str):
        places.append((triggers, "webhook_secret", "triggers.webhook_secret"))
    args = spec.get("secret_build_args")
    if isinstance(args, dict):
        places += [
            (args, k, f"secret_build_args.{k}") for k, v in args.items() if isinstance(v, str)
        ]
    return places


def seal_spec(spec: dict[str, Any], engine: Engine) -> dict[str, Any]:
    """A copy of a knot's JSON with every secret sealed with ``engine``'s key
    (read, or created, only when there is a secret)."""
    out = copy.deepcopy(spec)
    for container, name, _ in _secret_values(out):
        container[name] = store_key(engine).seal(container[name])
    return out


def open_spec(spec: dict[str, Any], engine: Engine, knot: str) -> dict[str, Any]:
    """A copy of a stored knot's JSON with every secret in clear."""
    out = copy.deepcopy(spec)
    for container, name, what in _secret_values(out):
        if is_sealed(container[name]):
            container[name] = store_key(engine).open(container[name], f"knot {knot} {what}")
    return out


def has_clear_secret(spec: dict[str, Any]) -> bool:
    return any(not is_sealed(c[n]) for c, n, _ in _secret_values(spec))


def seal_stored_secrets(engine: Engine) -> list[str]:
    """Seal the secrets an older version stored in clear; the knots changed.

    Idempotent, and safe beside a concurrent edit: a row is only rewritten
    if it is still the one read (same ``updated_at``), which it keeps.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            select(factory_knots.c.name, factory_knots.c.spec, factory_knots.c.updated_at)
        ).all()
    stale = [r for r in rows if isinstance(r.spec, dict) and has_clear_secret(r.spec)]
    if not stale:
        return []
    with engine.begin() as conn:
        for row in stale:
            conn.execute(
                update(factory_knots)
                .where(
                    factory_knots.c.name == row.name,
                    factory_knots.c.updated_at == row.updated_at,
                )
                .values(spec=seal_spec(row.spec, engine))
            )
    return [r.name for r in stale]
