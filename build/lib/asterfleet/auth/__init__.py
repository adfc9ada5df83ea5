"""The one identity of asterfleet: users, password hashes, API tokens,
refresh tokens, the login limiter and the principal.

The console, its JSON API, the registry's token endpoint and the factory
worker all use it. Passwords are argon2id hashes (rehashed on login when the
parameters change); session cookies and tokens are random secrets stored only
as SHA-256 hashes; every state-changing console request carries a CSRF token
bound to its session.
"""

from asterfleet.auth.login import Authenticator, TooManyAttempts
from asterfleet.auth.passwords import hash_password, needs_rehash, verify_password
from asterfleet.auth.principal import ROLE_SCOPES, Principal, password_principal
from asterfleet.auth.ratelimit import LoginLimiter
from asterfleet.auth.refresh import (
    create_refresh_token,
    refresh_principal,
    revoke_refresh_tokens,
)
from asterfleet.auth.sessions import SessionInfo, create_session, end_session, lookup_session
from asterfleet.auth.tokens import (
    SCOPES,
    IssuedToken,
    TokenInfo,
    create_token,
    list_tokens,
    parse_scopes,
    revoke_token,
    verify_token,
)
from asterfleet.auth.users import (
    ROLES,
    UserInfo,
    add_user,
    bootstrap_admin,
    check_password_policy,
    get_user,
    list_users,
    remove_user,
    set_password,
)

__all__ = [
    "ROLES",
    "ROLE_SCOPES",
    "SCOPES",
    "Authenticator",
    "IssuedToken",
    "LoginLimiter",
    "Principal",
    "SessionInfo",
    "TokenInfo",
    "TooManyAttempts",
    "UserInfo",
    "add_user",
    "bootstrap_admin",
    "check_password_policy",
    "create_refresh_token",
    "create_session",
    "create_token",
    "end_session",
    "get_user",
    "hash_password",
    "list_tokens",
    "list_users",
    "lookup_session",
    "needs_rehash",
    "parse_scopes",
    "password_principal",
    "refresh_principal",
    "remove_user",
    "revoke_refresh_tokens",
    "revoke_token",
    "set_password",
    "verify_password",
    "verify_token",
]
