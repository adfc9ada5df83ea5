"""The registry's identity backed by the console's users: one login for both.

Passwords are the console users' argon2 hashes (checked through the
registry's :class:`PasswordVerifier`, which remembers recent successes so a
client asking for a token before every request does not pay argon2 each
time); console API tokens (``aft_…``) work as registry secrets, their
``read`` scope meaning pull and ``write`` meaning pull, push and delete.
Console admins are registry admins. Namespace ownership, grants and public
flags stay in the registry's own tables (``reg_*``), keyed by user name.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, select

from asterfleet.auth import verify_token
from asterfleet.auth.tokens import TOKEN_PREFIX
from asterfleet.db import Database, User
from asterfleet.registry.identity import Principal, SqlIdentity
from asterfleet.registry.passwords import PasswordVerifier, hash_password

# Console token scope -> the registry actions it allows.
TOKEN_ACTIONS: dict[str, tuple[str, ...]] = {
    "read": ("pull",),
    "write": ("pull", "push", "delete"),
}

_DUMMY_HASH = hash_password("asterfleet-no-such-console-user")


def registry_scopes(console_scopes: Iterable[str]) -> tuple[str, ...]:
    """The registry token scopes a console API token's scopes stand for."""
    actions: dict[str, None] = {}
    for scope in console_scopes:
        for action in TOKEN_ACTIONS.get(scope, ()):
            actions[action] = None
    return tuple(actions)


class ConsoleIdentity:
    """:class:`~asterfleet.registry.identity.IdentityStore` on the console's
    ``users`` and ``api_tokens``; namespaces and grants from ``reg_*``."""

    def __init__(
        self, db: Database, registry_engine: Engine, verifier: PasswordVerifier | None = None
    ) -> None:
        self.db = db
        self.verifier = verifier or PasswordVerifier()
        # Ownership, grants and public flags: the registry's own tables.
        self.namespaces = SqlIdentity(registry_engine, self.verifier)

    def _user(self, username: str) -> tuple[str, str] | None:
        """(password hash, role) of a console user."""
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(User.password_hash, User.role).where(User.username == username)
            ).first()
        return None if row is None else (str(row.password_hash), str(row.role))

    def authenticate(self, username: str, secret: str) -> Principal | None:
        if secret.startswith(TOKEN_PREFIX):
            info = verify_token(self.db, secret)
            if info is None or info.username != username:
                return None
            return Principal(
                username=username,
                is_admin=info.role == "admin",
                via="token",
                token_scopes=registry_scopes(info.scopes),
            )
        user = self._user(username)
        if user is None:
            # Same cost as a real check, so names cannot be probed by timing.
            self.verifier.verify(username, secret, _DUMMY_HASH)
            return None
        password_hash, role = user
        if not self.verifier.verify(username, secret, password_hash):
            return None
        return Principal(username=username, is_admin=role == "admin")

    def principal(self, username: str) -> Principal | None:
        user = self._user(username)
        if user is None:
            return None
        return Principal(username=username, is_admin=user[1] == "admin", via="refresh")

    def namespaces_of(self, principal: Principal) -> frozenset[str]:
        return self.namespaces.namespaces_of(principal)

    def grants_of(self, principal: Principal) -> dict[str, frozenset[str]]:
        return self.namespaces.grants_of(principal)

    def public_names(self, repositories: Iterable[str]) -> frozenset[str]:
        return self.namespaces.public_names(repositories)
