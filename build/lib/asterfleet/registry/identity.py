"""Who a registry client is, and what it may touch.

The token server only talks to :class:`IdentityStore`; :class:`SqlIdentity`
implements it on the factory's own tables until the console's shared user
store is wired in (an adapter implementing the same four methods).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets as _secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from sqlalchemy import Engine, delete, insert, select, update

from asterfleet.errors import UsageError
from asterfleet.factory.db import as_utc, utcnow
from asterfleet.factory.schema import (
    reg_access_tokens,
    reg_grants,
    reg_namespaces,
    reg_repositories,
    reg_users,
)
from asterfleet.registry.passwords import PasswordVerifier, hash_password
from asterfleet.registry.scope import AccessView, ScopeError, parse_token_scope
from asterfleet.registry.secrets import PAT_PREFIX, hash_secret, new_secret

USERNAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


@dataclass(frozen=True)
class Principal:
    username: str
    is_admin: bool = False
    via: Literal["password", "token", "refresh", "service"] = "password"
    # Set when authenticated with a personal access token: what it may do.
    token_scopes: tuple[str, ...] | None = None


class IdentityStore(Protocol):
    def authenticate(self, username: str, secret: str) -> Principal | None:
        """The principal for a password or personal access token, or None."""

    def principal(self, username: str) -> Principal | None:
        """The (enabled) user named ``username``, for refresh-token grants."""

    def namespaces_of(self, principal: Principal) -> frozenset[str]:
        """Namespaces the principal owns (its username is always one)."""

    def grants_of(self, principal: Principal) -> dict[str, frozenset[str]]:
        """Namespace -> actions granted to the principal by their owners."""

    def public_names(self, repositories: Iterable[str]) -> frozenset[str]:
        """Which of these repositories (or their namespaces) are public."""


def access_view(
    store: IdentityStore, principal: Principal | None, repositories: Iterable[str]
) -> AccessView:
    repos = list(repositories)
    public = store.public_names(repos) if repos else frozenset()
    if principal is None:
        return AccessView(username=None, public=public)
    return AccessView(
        username=principal.username,
        is_admin=principal.is_admin,
        owned=store.namespaces_of(principal) | {principal.username},
        grants=store.grants_of(principal),
        public=public,
        token_scopes=principal.token_scopes,
    )


def check_username(name: str) -> str:
    if not USERNAME_RE.match(name):
        raise UsageError(
            f"user name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'"
        )
    return name


@dataclass(frozen=True)
class AccessToken:
    id: str
    username: str
    name: str
    scopes: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class SqlIdentity:
    """Users, namespaces, grants and personal access tokens in reg_* tables."""

    def __init__(self, engine: Engine, verifier: PasswordVerifier | None = None) -> None:
        self.engine = engine
        self.verifier = verifier or PasswordVerifier()

    # -- IdentityStore ---------------------------------------------------------

    def authenticate(self, username: str, secret: str) -> Principal | None:
        if secret.startswith(PAT_PREFIX):
            return self._authenticate_token(username, secret)
        with self.engine.connect() as conn:
            row = conn.execute(select(reg_users).where(reg_users.c.username == username)).first()
        if row is None or row.disabled:
            # Same cost as a real check, so names cannot be probed by timing.
            self.verifier.verify(username, secret, _DUMMY_HASH)
            return None
        if not self.verifier.verify(username, secret, row.password_hash):
            return None
        return Principal(username=username, is_admin=bool(row.is_admin))

    def _authenticate_token(self, username: str, secret: str) -> Principal | None:
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(reg_access_tokens, reg_users.c.is_admin, reg_users.c.disabled)
                .join(reg_users, reg_users.c.username == reg_access_tokens.c.username)
                .where(reg_access_tokens.c.secret_hash == hash_secret(secret))
            ).first()
            if row is None or row.disabled or row.revoked_at is not None:
                return None
            if row.username != username:
                return None
            expires = as_utc(row.expires_at)
            if expires is not None and expires <= now:
                return None
            last = as_utc(row.last_used_at)
            if last is None or (now - last).total_seconds() > 60:
                conn.execute(
                    update(reg_access_tokens)
                    .where(reg_access_tokens.c.id == row.id)
                    .values(last_used_at=now)
                )
        return Principal(
            username=row.username,
            is_admin=bool(row.is_admin),
            via="token",
            token_scopes=tuple(row.scopes),
        )

    def principal(self, username: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(reg_users).where(reg_users.c.username == username)).first()
        if row is None or row.disabled:
            return None
        return Principal(username=username, is_admin=bool(row.is_admin), via="refresh")

    def namespaces_of(self, principal: Principal) -> frozenset[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(reg_namespaces.c.name).where(reg_namespaces.c.owner == principal.username)
            )
            return frozenset(r.name for r in rows) | {principal.username}

    def grants_of(self, principal: Principal) -> dict[str, frozenset[str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(reg_grants).where(reg_grants.c.username == principal.username)
            )
            return {r.namespace: frozenset(r.actions.split(",")) for r in rows}

    def public_names(self, repositories: Iterable[str]) -> frozenset[str]:
        repos = set(repositories)
        namespaces = {r.split("/", 1)[0] for r in repos}
        with self.engine.connect() as conn:
            public_repos = conn.execute(
                select(reg_repositories.c.name).where(
                    reg_repositories.c.name.in_(repos), reg_repositories.c.public.is_(True)
                )
            )
            found = {r.name for r in public_repos}
            public_ns = conn.execute(
                select(reg_namespaces.c.name).where(
                    reg_namespaces.c.name.in_(namespaces), reg_namespaces.c.public.is_(True)
                )
            )
            found |= {r.name for r in public_ns}
        return frozenset(found)

    # -- management (CLI and console) ----------------------------------------------

    def add_user(self, username: str, password: str, is_admin: bool = False) -> None:
        check_username(username)
        if len(password) < 8:
            raise UsageError("password: use at least 8 characters")
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(reg_users.c.username).where(reg_users.c.username == username)
            ).first()
            if exists:
                raise UsageError(f"user {username!r} already exists: pick another name")
            conn.execute(
                insert(reg_users).values(
                    username=username,
                    password_hash=hash_password(password),
                    is_admin=is_admin,
                    disabled=False,
                    created_at=utcnow(),
                )
            )

    def set_password(self, username: str, password: str) -> None:
        if len(password) < 8:
            raise UsageError("password: use at least 8 characters")
        with self.engine.begin() as conn:
            done = conn.execute(
                update(reg_users)
                .where(reg_users.c.username == username)
                .values(password_hash=hash_password(password))
            )
            if done.rowcount == 0:
                raise UsageError(f"user {username!r} does not exist")

    def users(self) -> list[dict[str, object]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(reg_users).order_by(reg_users.c.username))
            return [
                {"username": r.username, "admin": r.is_admin, "disabled": r.disabled} for r in rows
            ]

    def add_namespace(self, name: str, owner: str, public: bool = False) -> None:
        check_username(name)
        with self.engine.begin() as conn:
            row = conn.execute(select(reg_namespaces).where(reg_namespaces.c.name == name)).first()
            if row is not None and row.owner != owner:
                raise UsageError(f"namespace {name!r} is owned by {row.owner!r}")
            if row is None:
                conn.execute(insert(reg_namespaces).values(name=name, owner=owner, public=public))
            else:
                conn.execute(
                    update(reg_namespaces)
                    .where(reg_namespaces.c.name == name)
                    .values(public=public)
                )

    def grant(self, namespace: str, username: str, actions: Iterable[str]) -> None:
        acts = sorted(set(actions))
        if not set(acts) <= {"pull", "push", "delete"} or not acts:
            raise UsageError("grant actions: choose among pull, push, delete")
        with self.engine.begin() as conn:
            conn.execute(
                delete(reg_grants).where(
                    reg_grants.c.namespace == namespace, reg_grants.c.username == username
                )
            )
            conn.execute(
                insert(reg_grants).values(
                    namespace=namespace, username=username, actions=",".join(acts)
                )
            )

    def set_public(self, repository: str, public: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(reg_repositories).where(reg_repositories.c.name == repository))
            conn.execute(insert(reg_repositories).values(name=repository, public=public))

    def create_token(
        self,
        username: str,
        name: str,
        scopes: Iterable[str] = ("pull", "push"),
        expires_in: dt.timedelta | None = dt.timedelta(days=90),
    ) -> tuple[str, str]:
        """A new personal access token: (id, secret). The secret is shown once."""
        scope_list = tuple(scopes)
        for s in scope_list:
            if s in ("pull", "push", "delete", "*"):
                continue
            try:
                parse_token_scope(s)
            except ScopeError as exc:
                raise UsageError(
                    f"token scope {s!r}: use pull, push, delete or repository:NAME:ACTIONS"
                ) from exc
        secret = new_secret(PAT_PREFIX)
        # Hex, so an id never starts with "-" and reads as an option on the CLI.
        token_id = _secrets.token_hex(6)
        now = utcnow()
        with self.engine.begin() as conn:
            if (
                conn.execute(
                    select(reg_users.c.username).where(reg_users.c.username == username)
                ).first()
                is None
            ):
                raise UsageError(f"user {username!r} does not exist: add it first")
            conn.execute(
                insert(reg_access_tokens).values(
                    id=token_id,
                    username=username,
                    name=name,
                    secret_hash=hash_secret(secret),
                    scopes=list(scope_list),
                    created_at=now,
                    expires_at=(now + expires_in) if expires_in else None,
                )
            )
        return token_id, secret

    def revoke_token(self, token_id: str, username: str | None = None) -> None:
        cond = [reg_access_tokens.c.id == token_id]
        if username is not None:
            cond.append(reg_access_tokens.c.username == username)
        with self.engine.begin() as conn:
            done = conn.execute(update(reg_access_tokens).where(*cond).values(revoked_at=utcnow()))
        if done.rowcount == 0:
            raise UsageError(f"token {token_id!r} not found: see 'asterfleet registry token ls'")

    def tokens(self, username: str | None = None) -> list[AccessToken]:
        query = select(reg_access_tokens).order_by(reg_access_tokens.c.created_at)
        if username is not None:
            query = query.where(reg_access_tokens.c.username == username)
        with self.engine.connect() as conn:
            return [
                AccessToken(
                    id=r.id,
                    username=r.username,
                    name=r.name,
                    scopes=tuple(r.scopes),
                    created_at=as_utc(r.created_at) or r.created_at,
                    expires_at=as_utc(r.expires_at),
                    revoked_at=as_utc(r.revoked_at),
                    last_used_at=as_utc(r.last_used_at),
                )
                for r in conn.execute(query)
            ]


_DUMMY_HASH = hash_password("asterfleet-no-such-user")
