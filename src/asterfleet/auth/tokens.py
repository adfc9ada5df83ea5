"""API tokens: shown once, stored hashed, scoped, optionally expiring, revocable.

One kind of token for everything: scripts against the console's API
(``read``, ``write``), registry clients (``pull``, ``push``, ``delete``, or
``repository:NAME:ACTIONS`` for one repository or ``NAMESPACE/*``) and the
factory worker's short-lived push credential.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from asterfleet.auth.principal import Principal
from asterfleet.auth.secrets_ import digest, held_by, new_secret
from asterfleet.db import ApiToken, Database, RefreshToken, User
from asterfleet.errors import UsageError
from asterfleet.tokenscope import PLAIN_SCOPES, is_scope

TOKEN_PREFIX = "aft_"
# Personal access tokens of the registry's former user store, carried over by
# the 0002 migration: they keep working until they expire or are revoked.
LEGACY_PREFIXES = ("afp_",)
# read: look at the fleet, balancers, events; write: drain, undrain, weight;
# pull, push, delete: the registry, in the namespaces the user may use.
SCOPES = PLAIN_SCOPES


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
        return self.status == "active"

    @property
    def status(self) -> str:
        """active, revoked or expired (revoked wins: it was someone's act)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= time.time():
            return "expired"
        return "active"

    def principal(self, via: str = "token") -> Principal:
        return Principal(
            self.username, self.role, via, self.scopes, token_name=self.name, token_id=self.id
        )


def check_scope(scope: str) -> str:
    if is_scope(scope):
        return scope
    raise UsageError(
        f"invalid token scope {scope!r}: use {', '.join(SCOPES)} "
        "or repository:NAME:ACTIONS (NAME may end in /*)"
    )


def parse_scopes(text: str) -> tuple[str, ...]:
    """``read,write`` or ``pull repository:alice/app:pull,push`` into a sorted
    tuple; UsageError naming unknown scopes."""
    items: set[str] = set()
    for word in text.split():
        if word.startswith("repository:"):
            items.add(word)
        else:
            items.update(p.strip() for p in word.split(",") if p.strip())
    if not items:
        raise UsageError(
            f"invalid token scopes {text!r}: use a comma-separated list of {', '.join(SCOPES)}"
        )
    return tuple(sorted(check_scope(s) for s in items))


def _info(t: ApiToken, user: User) -> TokenInfo:
    return TokenInfo(
        t.id,
        user.username,
        user.role,
        t.name,
        t.prefix,
        tuple(t.scopes.split()),
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
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise UsageError(f"token lifetime {ttl_seconds!r}: use a positive number of seconds")
    wanted = tuple(sorted({check_scope(s) for s in scopes}))
    if not wanted:
        raise UsageError(f"a token needs at least one scope: {', '.join(SCOPES)}")
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
            scopes=" ".join(wanted),
            created_at=now,
            expires_at=now + ttl_seconds if ttl_seconds else None,
        )
        s.add(row)
        s.flush()
        return IssuedToken(row.id, name, secret, wanted)


def list_tokens(db: Database, username: str | None = None) -> list[TokenInfo]:
    with db.session() as s:
        q = select(ApiToken, User).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id)
        if username is not None:
            q = q.where(User.username == username)
        return [_info(t, u) for t, u in s.execute(q).all()]


def revoke_token(db: Database, token_id: int, username: str | None = None) -> TokenInfo:
    """Revoke one token (only the owner's, when ``username`` is given) and
    every refresh token a login with it produced."""
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
        s.execute(delete(RefreshToken).where(RefreshToken.token_id == token.id))
        return _info(token, user)


def is_token(secret: str) -> bool:
    return secret.startswith((TOKEN_PREFIX, *LEGACY_PREFIXES))


def verify_token(db: Database, secret: str) -> TokenInfo | None:
    """The token's info if ``secret`` is a live token; records its last use."""
    if not is_token(secret):
        return None
    with db.session() as s:
        found = held_by(s, ApiToken, "token_hash", secret)
        if found is None:
            return None
        token, user = found
        info = _info(token, user)
        if not info.active:
            return None
        now = time.time()
        # One write a minute at most: registry clients ask before every request.
        if token.last_used_at is None or now - token.last_used_at > 60:
            token.last_used_at = now
        return info
