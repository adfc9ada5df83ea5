"""Carry the registry's former user store (``reg_users``, ``reg_access_tokens``)
into the one identity (``users``, ``api_tokens``).

Run by the console migration 0002 when those tables sit in the console's
database, and by ``asterfleet users import-registry --from URL`` when they sit
in the factory's. Idempotent: users and tokens already present are skipped.
A name that exists on both sides is one person (namespaces were already
keyed by name): the console's password wins and the registry's tokens join
that user. Old ``afp_`` tokens keep working, with the same rights.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, MetaData, Table, inspect, select

from asterfleet.tokenscope import REPOSITORY_SCOPE_RE


@dataclass
class CarriedOver:
    users: int = 0
    tokens: int = 0
    skipped: list[str] = field(default_factory=list)


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return float(value.timestamp())
    return float(value)


def token_scopes(legacy: list[str]) -> list[str] | None:
    """A registry token's scopes in the one identity's words (None: cannot be
    expressed without widening it, so the token is not carried)."""
    out: list[str] = []
    for scope in legacy:
        if scope == "*":
            out += ["pull", "push", "delete"]
        elif scope in ("pull", "push", "delete") or REPOSITORY_SCOPE_RE.match(scope):
            out.append(scope)
        else:
            return None
    return sorted(set(out)) or None


def has_legacy_tables(conn: Connection) -> bool:
    return inspect(conn).has_table("reg_users")


def carry_over(source: Connection, target: Connection) -> CarriedOver:
    """Copy users and tokens from ``source``'s reg_* tables into ``target``."""
    done = CarriedOver()
    if not has_legacy_tables(source):
        return done
    meta = MetaData()
    reg_users = Table("reg_users", meta, autoload_with=source)
    tables = inspect(source).get_table_names()
    reg_tokens = (
        Table("reg_access_tokens", meta, autoload_with=source)
        if "reg_access_tokens" in tables
        else None
    )
    tmeta = MetaData()
    users = Table("users", tmeta, autoload_with=target)
    api_tokens = Table("api_tokens", tmeta, autoload_with=target)
    ids: dict[str, int] = {
        r.username: r.id for r in target.execute(select(users.c.id, users.c.username))
    }
    for row in source.execute(select(reg_users)):
        if row.username in ids:
            continue
        if row.disabled:
            done.skipped.append(f"user {row.username} (disabled)")
            continue
        result = target.execute(
            users.insert().values(
                username=row.username,
                password_hash=row.password_hash,
                role="admin" if row.is_admin else "operator",
                created_at=_epoch(row.created_at) or time.time(),
            )
        )
        ids[row.username] = int(result.inserted_primary_key[0])  # type: ignore[index]
        done.users += 1
    if reg_tokens is None:
        return done
    known = {h for (h,) in target.execute(select(api_tokens.c.token_hash))}
    for tok in source.execute(select(reg_tokens)):
        if tok.secret_hash in known or tok.username not in ids:
            continue
        scopes = token_scopes(list(tok.scopes or []))
        if scopes is None:
            done.skipped.append(f"token {tok.id} of {tok.username} (scopes {tok.scopes})")
            continue
        target.execute(
            api_tokens.insert().values(
                user_id=ids[tok.username],
                name=str(tok.name)[:64],
                prefix="afp_…",
                token_hash=tok.secret_hash,
                scopes=" ".join(scopes),
                created_at=_epoch(tok.created_at) or time.time(),
                expires_at=_epoch(tok.expires_at),
                last_used_at=_epoch(tok.last_used_at),
                revoked_at=_epoch(tok.revoked_at),
            )
        )
        done.tokens += 1
    return done
