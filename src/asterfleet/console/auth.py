"""Login, logout, and the Account page (password, API tokens)."""

from __future__ import annotations

import asyncio
import math
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from asterfleet.auth import (
    TooManyAttempts,
    create_session,
    create_token,
    end_session,
    get_user,
    list_tokens,
    parse_scopes,
    revoke_token,
    set_password,
)
from asterfleet.auth.secrets_ import new_secret
from asterfleet.console.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Principal,
    page_user,
    session_of,
)
from asterfleet.console.state import console_state
from asterfleet.console.web import render
from asterfleet.errors import UsageError

router = APIRouter(include_in_schema=False)
log = structlog.get_logger("asterfleet.console")


def safe_next(target: str) -> str:
    """Only local paths: a login must never bounce the browser to another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/fleet"
    return target


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_form(
    request: Request, next_path: str, error: str = "", status_code: int = 200, username: str = ""
) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_secret(24)
    resp = render(
        request,
        "login.html",
        None,
        status_code=status_code,
        login_csrf=token,
        next=safe_next(next_path),
        error=error,
        username=username,
    )
    resp.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=console_state(request).settings.secure_cookies,
        path="/login",
    )
    return resp


@router.get("/login")
async def login_page(request: Request, next: str = "/fleet") -> Response:
    if await session_of(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_form(request, next)


@router.post("/login")
async def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    next: str = Form("/fleet"),
) -> Response:
    st = console_state(request)
    try:
        user = await asyncio.to_thread(
            st.logins.login, username.strip(), password, _client(request)
        )
    except TooManyAttempts as exc:
        wait = exc.retry_after
        st.metrics.login_failures.labels("rate_limited").inc()
        log.warning("login_rate_limited", user=username, client=_client(request))
        resp = _login_form(
            request,
            next,
            f"Too many failed logins. Try again in {math.ceil(wait)} s.",
            429,
            username,
        )
        resp.headers["Retry-After"] = str(math.ceil(wait))
        return resp
    info = await asyncio.to_thread(get_user, st.db, user.username) if user else None
    if user is None or info is None or user.via != "password":
        st.metrics.login_failures.labels("bad_credentials").inc()
        log.warning("login_failed", user=username, client=_client(request))
        return _login_form(request, next, "Wrong user name or password.", 401, username)
    cookie, _ = await asyncio.to_thread(
        create_session,
        st.db,
        info.id,
        st.settings.session_ttl,
        f"{_client(request)} {request.headers.get('user-agent', '')}",
    )
    log.info("login", user=user.username, client=_client(request))
    resp = RedirectResponse(safe_next(next), status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(st.settings.session_ttl),
        httponly=True,
        samesite="lax",
        secure=st.settings.secure_cookies,
        path="/",
    )
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie:
        await asyncio.to_thread(end_session, console_state(request).db, cookie)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/account")
async def account_page(
    request: Request, msg: str = "", err: str = "", user: Principal = Depends(page_user)
) -> Response:
    return await _account(request, user, msg=msg, err=err)


async def _account(request: Request, user: Principal, **shown: Any) -> Response:
    """The Account page: the user's tokens and whatever ``shown`` adds."""
    tokens = await asyncio.to_thread(list_tokens, console_state(request).db, user.username)
    return render(
        request,
        "account.html",
        user,
        area="account",
        tokens=tokens,
        lifetimes=TOKEN_LIFETIMES,
        **shown,
    )


@router.post("/account/password")
async def change_password(
    request: Request,
    current: str = Form(""),
    new: str = Form(""),
    confirm: str = Form(""),
    user: Principal = Depends(page_user),
) -> Response:
    st = console_state(request)
    try:
        checked = await asyncio.to_thread(st.logins.login, user.username, current, _client(request))
    except TooManyAttempts:
        checked = None
    if checked is None or checked.via != "password":
        return RedirectResponse("/account?err=The+current+password+is+wrong.", status_code=303)
    if new != confirm:
        return RedirectResponse("/account?err=The+new+passwords+differ.", status_code=303)
    try:
        await asyncio.to_thread(set_password, st.db, user.username, new)
    except UsageError as exc:
        return RedirectResponse("/account?err=" + quote(str(exc)), status_code=303)
    log.info("password_changed", user=user.username)
    # Changing the password ended every session, this one too.
    return RedirectResponse("/login?next=/account", status_code=303)


TOKEN_LIFETIMES = (30, 90, 365)  # days, offered on the Account page


def _expiry(days: str) -> float | None:
    """Seconds until a new token expires (None: never), from the form's days."""
    if not days.strip():
        return None
    if not days.strip().isdigit() or not 1 <= int(days) <= 3650:
        raise UsageError(f"expires after {days!r} days: give 1-3650 days, or never")
    return int(days) * 86400.0


@router.post("/account/tokens")
async def new_token(
    request: Request,
    name: str = Form(""),
    scopes: str = Form("read"),
    expires_days: str = Form("", description="days until it expires; empty: never"),
    user: Principal = Depends(page_user),
) -> Response:
    st = console_state(request)
    try:
        wanted = parse_scopes(scopes)
        if "write" in wanted and not user.can_act:
            raise UsageError(f"{user.username} is a viewer: a token can only have scope 'read'")
        ttl = _expiry(expires_days)
        issued = await asyncio.to_thread(
            create_token, st.db, user.username, name, wanted, ttl_seconds=ttl
        )
    except UsageError as exc:
        return RedirectResponse("/account?err=" + quote(str(exc)), status_code=303)
    log.info("token_created", user=user.username, token=issued.name, scopes=issued.scopes)
    return await _account(request, user, issued=issued)


@router.post("/account/tokens/{token_id}/revoke")
async def revoke(request: Request, token_id: int, user: Principal = Depends(page_user)) -> Response:
    st = console_state(request)
    try:
        await asyncio.to_thread(revoke_token, st.db, token_id, user.username)
    except UsageError as exc:
        return RedirectResponse("/account?err=" + quote(str(exc)), status_code=303)
    log.info("token_revoked", user=user.username, token_id=token_id)
    return RedirectResponse("/account?msg=Token+revoked.", status_code=303)
