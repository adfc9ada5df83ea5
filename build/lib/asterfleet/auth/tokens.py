"""API tokens for scripts: shown once, stored hashed, scoped, revocable."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select

from asterfleet.auth.secrets_ import digest, new_secret
from asterfleet.db import ApiToken, Database, User
from asterfleet.errors import UsageError

TOKEN_PREFIX = "aft_"
# read: look at the fleet, balancers, events; write: drain, undrain, weight.
SCOPES = ("read", "write")


@dataclass(frozen=True)
class IssuedToken:
    id: int
    name: str
    token: str  # the only time the secret is available
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class TokenInfo:
    id: int
    username: str
    role: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (
            self.expires_at is None or self.expires_at > time.time()
        )


def parse_scopes(text: str) -> tuple[str, ...]:
    """``read,write`` into a sorted tuple; UsageError naming unknown scopes."""
    items = sorted({p.strip() for p in text.split(",") if p.strip()})
    bad = [p for p in items if p not in SCOPES]
    if bad or not items:
        raise UsageError(
            f"invalid token scopes {text!r}: use a comma-separated list of {', '.join(SCOPES)}"
        )
    return tuple(items)


def _info(t: ApiToken, user: User) -> TokenInfo:
    return TokenInfo(
        t.id,
        user.username,
        user.role,
        t.name,
        t.prefix,
        tuple(t.scopes.split(",")),
        t.created_at,
        t.expires_at,
        t.last_used_at,
        t.revoked_at,
    )


def create_token(
    db: Database,
    username: str,
    name: str,
    scopes: tuple[str, ...] = ("read",),
    ttl_seconds: float | None = None,
) -> IssuedToken:
    name = name.strip()
    if not name or len(name) > 64:
        raise UsageError("a token needs a name of 1-64 characters (what script uses it)")
    for scope in scopes:
        if scope not in SCOPES:
            raise UsageError(f"invalid scope {scope!r}: use {', '.join(SCOPES)}")
    secret = TOKEN_PREFIX + new_secret(30)
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise UsageError(f"no user {username!r}: see 'asterfleet users ls'")
        now = time.time()
        row = ApiToken(
            user_id=user.id,
            name=name,
            prefix=secret[:10],
            token_hash=digest(secret),
            scopes=",".join(sorted(set(scopes))),
            created_at=now,
            expires_at=now + ttl_seconds if ttl_seconds else None,
        )
        s.add(row)
        s.flush()
        return IssuedToken(row.id, name, secret, tuple(sorted(set(scopes))))


def list_tokens(db: Database, username: str | None = None) -> list[TokenInfo]:
    with db.session() as s:
        q = select(ApiToken, User).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
        if username is not None:
            q = q.where(User.username == username)
        return [_info(t, u) for t, u in s.execute(q).all()]


def revoke_token(db: Database, token_id: int, username: str | None = None) -> TokenInfo:
    """Revoke one token (only the owner's, when ``username`` is given)."""
    with db.session() as s:
        row = s.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == token_id)
        ).first()
        if row is None or (username is not None and row[1].username != username):
            raise UsageError(f"no API token with id {token_id}: see 'asterfleet users token ls'")
        token, user = row
        if token.revoked_at is None:
            token.revoked_at = time.time()
        return _info(token, user)


def verify_token(db: Database, secret: str) -> TokenInfo | None:
    """The token's info if ``secret`` is a live token; records its last use."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    with db.session() as s:
        row = s.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == digest(secret))
        ).first()
        if row is None:
            return None
        token, user = row
        info = _info(token, user)
        if not info.active:
            return None
        token.last_used_at = time.time()
        return info
