"""Random secrets and the one-way hash they are stored under."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from asterfleet.db import ApiToken, RefreshToken, User
from asterfleet.db import Session as DbSession

_Stored = TypeVar("_Stored", DbSession, ApiToken, RefreshToken)


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    """SHA-256 hex: enough for 256-bit random secrets (no dictionary to guess from)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def held_by(
    s: OrmSession, model: type[_Stored], hash_column: str, secret: str
) -> tuple[_Stored, User] | None:
    """The row of ``model`` stored under ``secret``'s hash, with its user."""
    if not secret or len(secret) > 200:
        return None
    row = s.execute(
        select(model, User)
        .join(User, User.id == model.user_id)
        .where(getattr(model, hash_column) == digest(secret))
    ).first()
    return None if row is None else (row[0], row[1])
