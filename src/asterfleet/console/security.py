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
from typing import Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from asterfleet.auth import Principal, SessionInfo, lookup_session, verify_token
from asterfleet.auth.secrets_ import same
from asterfleet.console.state import console_state

SESSION_COOKIE = "af_session"
LOGIN_CSRF_COOKIE = "af_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

__all__ = [
    "API_ERRORS",
    "ErrorOut",
    "Principal",
    "api_reader",
    "api_user",
    "api_writer",
    "csrf_guard",
    "metrics_reader",
    "page_user",
    "require_write",
]

# Declares the bearer scheme in the OpenAPI document; api_user reads the header itself.
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description=(
        "an API token from 'asterfleet users token create' "
        "(scope read or write; metrics for /metrics)"
    ),
)


class ErrorOut(BaseModel):
    detail: str


# The error answers every /api route may give, for the OpenAPI document.
API_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the request names something invalid"},
    401: {"model": ErrorOut, "description": "no token, or an invalid, expired or revoked one"},
    403: {"model": ErrorOut, "description": "the token or user lacks the scope or role"},
    404: {"model": ErrorOut, "description": "no such object (or not visible to you)"},
    413: {"model": ErrorOut, "description": "request body over the console's size limit"},
    503: {"model": ErrorOut, "description": "etcd or the image factory is not reachable"},
}


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


async def session_still_valid(request: Request) -> bool:
    """Look the request's session up again (not the per-request cache): for
    long-lived responses such as log streams, which must stop at logout or expiry."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie:
        return False
    sess = await asyncio.to_thread(lookup_session, console_state(request).db, cookie)
    return sess is not None


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


async def api_user(
    request: Request,
    _declared: HTTPAuthorizationCredentials | None = Depends(BEARER),
) -> Principal:
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
        return info.principal(via="api")
    sess = await session_of(request)
    if sess is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "authentication required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="asterfleet"'},
        )
    return _principal_of(sess)


def need_scope(p: Principal, scope: str) -> None:
    if scope not in p.scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this token lacks scope {scope!r}")


async def api_reader(who: Principal = Depends(api_user)) -> Principal:
    """The API caller, who must hold scope ``read``."""
    need_scope(who, "read")
    return who


async def api_writer(who: Principal = Depends(api_user)) -> Principal:
    """The API caller, who must hold scope ``write``: checked as a dependency, so
    before the body is validated (a read-only token's write is 403, never 422)."""
    need_scope(who, "write")
    return who


async def metrics_reader(who: Principal = Depends(api_user)) -> Principal:
    """Who may scrape /metrics: a token with scope ``metrics`` (or ``read``),
    or a logged-in browser."""
    if not who.may_scrape_metrics:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token lacks scope 'metrics'")
    return who


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
    # Who is asking first: a request without a session (or without the login
    # cookie) is refused before its form is parsed.
    if request.url.path == "/login":
        expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    else:
        sess = await session_of(request)
        if sess is None:
            # No session: the route's own dependency answers 401 or redirects.
            return
        expected = sess.csrf_token
    if not expected:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "missing or wrong CSRF token: reload the page and try again",
        )
    submitted = await _submitted_token(request)
    if not expected or not submitted or not same(expected, submitted):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "missing or wrong CSRF token: reload the page and try again",
        )
