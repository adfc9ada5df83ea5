"""Who may use the console and the API: users, sessions, API tokens, CSRF.

Passwords are argon2id hashes; session cookies and API tokens are random
secrets stored only as SHA-256 hashes; every state-changing request carries a
CSRF token bound to its session.
"""

from asterfleet.auth.passwords import hash_password, needs_rehash, verify_password
from asterfleet.auth.ratelimit import LoginLimiter
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
    authenticate,
    bootstrap_admin,
    check_password_policy,
    get_user,
    list_users,
    remove_user,
    set_password,
)

__all__ = [
    "ROLES",
    "SCOPES",
    "IssuedToken",
    "LoginLimiter",
    "SessionInfo",
    "TokenInfo",
    "UserInfo",
    "add_user",
    "authenticate",
    "bootstrap_admin",
    "check_password_policy",
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
    "remove_user",
    "revoke_token",
    "set_password",
    "verify_password",
    "verify_token",
]
