"""Refresh tokens (the registry's ``offline_token``): a long-lived secret
that stands for the login that produced it, never for more.

A refresh token keeps the API token its login used (if any) and that
token's scopes; every refresh rechecks the user and the token, so revoking
the token, changing the password or removing the user ends it.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from asterfleet.auth.principal import Principal, password_principal
from asterfleet.auth.secrets_ import digest, held_by, new_secret
from asterfleet.db import ApiToken, Database, RefreshToken, User

REFRESH_PREFIX = "afr_"
LIFETIME = 30 * 86400.0


def create_refresh_token(
    db: Database, principal: Principal, service: str, lifetime: float = LIFETIME
) -> str:
    secret = REFRESH_PREFIX + new_secret(32)
    now = time.time()
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == principal.username))
        if user is None:
            raise LookupError(f"no user {principal.username!r}")
        s.add(
            RefreshToken(
                secret_hash=digest(secret),
                user_id=user.id,
                token_id=principal.token_id,
                scopes=" ".join(principal.scopes) if principal.token_id is not None else "",
                service=service,
                created_at=now,
                expires_at=now + lifetime,
            )
        )
    return secret


def refresh_principal(db: Database, secret: str, service: str) -> Principal | None:
    """Who a refresh token stands for now, or None when it no longer does."""
    if not secret.startswith(REFRESH_PREFIX):
        return None
    now = time.time()
    with db.session() as s:
        found = held_by(s, RefreshToken, "secret_hash", secret)
        if found is None:
            return None
        refresh, user = found
        if refresh.service != service or refresh.expires_at <= now:
            return None
        if refresh.token_id is None:
            return password_principal(user.username, user.role, via="refresh")
        token = s.get(ApiToken, refresh.token_id)
        if token is None or token.revoked_at is not None:
            return None
        if token.expires_at is not None and token.expires_at <= now:
            return None
        # The token's scopes today, never more than when the refresh token was made.
        scopes = tuple(sorted(set(token.scopes.split()) & set(refresh.scopes.split())))
        return Principal(
            user.username, user.role, "refresh", scopes, token_name=token.name, token_id=token.id
        )


def revoke_refresh_tokens(db: Database, username: str) -> int:
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            return 0
        done = s.execute(delete(RefreshToken).where(RefreshToken.user_id == user.id))
        return int(done.rowcount or 0)  # type: ignore[attr-defined]
