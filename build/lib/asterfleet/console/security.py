"""Who is asking: session cookies for pages, bearer tokens for scripts, and CSRF.

Every state-changing request (anything but GET/HEAD/OPTIONS) passes
:func:`csrf_guard`, installed on the whole app: a request authenticated by a
session cookie must carry that session's CSRF token, in the ``csrf_token``
form field or the ``X-CSRF-Token`` header. A bearer token is not ambient (a
browser never sends it on its own), so API calls made with one need no CSRF
token. The login form, made before any session exists, uses a double-submit
cookie instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import HTTPException, Request, status

from asterfleet.auth import SessionInfo, lookup_session, verify_token
from asterfleet.auth.secrets_ import same
from asterfleet.console.state import console_state

SESSION_COOKIE = "af_session"
LOGIN_CSRF_COOKIE = "af_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    via: str  # "console" (session cookie) or "api" (bearer token)
    scopes: tuple[str, ...]
    csrf_token: str = ""
    token_name: str = ""

    @property
    def can_act(self) -> bool:
        return self.role in ("admin", "operator") and "write" in self.scopes

    @property
    def actor(self) -> str:
        """How actions are signed in the admin record and the events table."""
        return f"{self.username}@{self.via}"


class LoginRequired(Exception):
    """A page was asked for without a session: redirect to the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


def _principal_of(sess: SessionInfo) -> Principal:
    scopes = ("read", "write") if sess.can_act else ("read",)
    return Principal(sess.username, sess.role, "console", scopes, sess.csrf_token)


async def session_of(request: Request) -> SessionInfo | None:
    """The request's session (looked up once per request)."""
    if hasattr(request.state, "session"):
        cached: SessionInfo | None = request.state.session
        return cached
    cookie = request.cookies.get(SESSION_COOKIE, "")
    sess = None
    if cookie:
        sess = await asyncio.to_thread(lookup_session, console_state(request).db, cookie)
    request.state.session = sess
    return sess


async def page_user(request: Request) -> Principal:
    """Dependency of every page: the logged-in user, or a redirect to /login."""
    sess = await session_of(request)
    if sess is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)
    return _principal_of(sess)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def api_user(request: Request) -> Principal:
    """Dependency of the JSON API: a bearer token, or a browser session."""
    token = _bearer(request)
    if token is not None:
        info = await asyncio.to_thread(verify_token, console_state(request).db, token)
        if info is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid, expired or revoked API token: create one with "
                "'asterfleet users token create'",
                headers={"WWW-Authenticate": 'Bearer realm="asterfleet"'},
            )
        return Principal(info.username, info.role, "api", info.scopes, token_name=info.name)
    sess = await session_of(request)
    if sess is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "authentication required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="asterfleet"'},
        )
    return _principal_of(sess)


def require_write(p: Principal) -> None:
    if not p.can_act:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{p.username} may not change the fleet: needs role admin or operator"
            + (" and a token with scope 'write'" if p.via == "api" else ""),
        )


async def _submitted_token(request: Request) -> str:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


async def csrf_guard(request: Request) -> None:
    """App-wide dependency: reject state-changing requests without a valid CSRF token."""
    if request.method in SAFE_METHODS:
        return
    if _bearer(request) is not None and request.url.path.startswith("/api/"):
        return
    submitted = await _submitted_token(request)
    if request.url.path == "/login":
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    else:
        sess = await session_of(request)
        if sess is None:
            # No session: the route's own dependency answers 401 or redirects.
            return
        expected = sess.csrf_token
    if not expected or not submitted or not same(expected, submitted):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "missing or wrong CSRF token: reload the page and try again",
        )
