"""The token endpoint of the Distribution token spec, as a FastAPI router.

``GET /token`` (Basic auth, ``service``, repeated ``scope``, ``account``,
``offline_token``) and the OAuth2 ``POST /token`` (``grant_type`` password or
refresh_token). The router mounts in the console; :func:`create_app` runs it
standalone with the catalogue and knot webhook routers beside it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from asterfleet.auth import (
    Authenticator,
    Principal,
    TooManyAttempts,
    create_refresh_token,
    refresh_principal,
)
from asterfleet.registry.metrics import LOGIN_FAILURES, TOKENS_ISSUED
from asterfleet.registry.ownership import Ownership
from asterfleet.registry.scope import (
    AccessView,
    Scope,
    ScopeError,
    granted_actions,
    parse_scopes,
)
from asterfleet.registry.tokens import Issuer
from asterfleet.storage import utcnow

log = structlog.get_logger("asterfleet.registry.token")


class TokenError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float = 0) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class NeedsStore(Exception):
    """The answer is not in the memo: ask the identity store, off the event loop."""


class _TtlCache:
    """A small time-bounded memo: registry clients ask for a token before
    nearly every request with the same credentials and scopes."""

    def __init__(self, ttl: float, size: int = 8192) -> None:
        self.ttl = ttl
        self.size = size
        self._data: dict[object, tuple[float, object]] = {}
        self._key = secrets.token_bytes(32)
        self._guard = threading.Lock()
        self._inflight: dict[object, threading.Lock] = {}

    def fingerprint(self, *parts: str) -> bytes:
        return hmac.new(self._key, "\0".join(parts).encode(), hashlib.sha256).digest()

    @contextlib.contextmanager
    def single_flight(self, key: object) -> Iterator[None]:
        with self._guard:
            lock = self._inflight.setdefault(key, threading.Lock())
        with lock:
            yield
        with self._guard:
            if not lock.locked():
                self._inflight.pop(key, None)

    def get(self, key: object) -> object | None:
        hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: object, value: object) -> None:
        if len(self._data) >= self.size:
            self._data.clear()
        self._data[key] = (time.monotonic() + self.ttl, value)


@dataclass
class TokenService:
    """Everything the endpoint needs; shared by the GET and POST forms.

    Logins go through the one identity's :class:`~asterfleet.auth.Authenticator`
    (its limiter, its cap on password checks); what a principal may touch
    comes from the registry's :class:`~asterfleet.registry.ownership.Ownership`.
    Successful logins and access decisions are remembered for
    ``cache_seconds`` (default 5): a revoked token or grant stops working
    within that time, and the endpoint serves thousands of tokens a second.
    """

    logins: Authenticator
    ownership: Ownership
    issuer: Issuer
    cache_seconds: float = 5.0
    _logins: _TtlCache = field(init=False)
    _views: _TtlCache = field(init=False)

    def __post_init__(self) -> None:
        self._logins = _TtlCache(self.cache_seconds)
        self._views = _TtlCache(self.cache_seconds)

    def login(
        self, username: str, secret: str, address: str, cached_only: bool = False
    ) -> Principal:
        wait = self.logins.limiter.retry_after(
            f"user:{username.strip().lower()}", f"client:{address}"
        )
        if wait > 0:
            LOGIN_FAILURES.labels("rate_limited").inc()
            raise TokenError(429, "TOOMANYREQUESTS", "too many failed logins", wait)
        key = self._logins.fingerprint(username, secret)
        cached = self._logins.get(key)
        if isinstance(cached, Principal):
            return cached
        if cached_only:
            raise NeedsStore
        # One verification per credential at a time: a burst of clients with
        # the same (uncached) password waits for one argon2 run, not one each.
        with self._logins.single_flight(key):
            cached = self._logins.get(key)
            if isinstance(cached, Principal):
                return cached
            try:
                principal = self.logins.login(username, secret, address)
            except TooManyAttempts as exc:
                LOGIN_FAILURES.labels("rate_limited").inc()
                raise TokenError(
                    429, "TOOMANYREQUESTS", "too many failed logins", exc.retry_after
                ) from exc
            if principal is not None:
                self._logins.put(key, principal)
        if principal is None:
            LOGIN_FAILURES.labels("bad_credentials").inc()
            log.info("login_failed", user=username, client=address)
            raise TokenError(401, "UNAUTHORIZED", "invalid username, password or token")
        return principal

    def from_refresh(self, secret: str, service: str) -> Principal:
        key = self._logins.fingerprint("refresh", secret, service)
        cached = self._logins.get(key)
        if isinstance(cached, Principal):
            return cached
        principal = refresh_principal(self.logins.db, secret, service)
        if principal is None:
            LOGIN_FAILURES.labels("bad_refresh_token").inc()
            raise TokenError(401, "UNAUTHORIZED", "refresh token is invalid, expired or revoked")
        self._logins.put(key, principal)
        return principal

    def grant(
        self,
        principal: Principal | None,
        service: str,
        scopes: list[Scope],
        cached_only: bool = False,
    ) -> list[Scope]:
        if service != self.issuer.service:
            raise TokenError(400, "DENIED", f"unknown service {service!r}")
        repos = [s.name for s in scopes if s.type == "repository"]
        view_key = (principal, tuple(repos))
        view = self._views.get(view_key)
        if not isinstance(view, AccessView):
            if cached_only:
                raise NeedsStore
            view = self.ownership.view(principal, repos)
            self._views.put(view_key, view)
        granted = []
        for scope in scopes:
            actions = granted_actions(view, scope)
            granted.append(Scope(scope.type, scope.name, actions))
        return granted

    def token_body(
        self,
        principal: Principal | None,
        granted: list[Scope],
        offline: bool,
        service: str,
        refresh_token: str | None = None,
    ) -> dict[str, Any]:
        now = utcnow()
        subject = principal.username if principal else ""
        token = self.issuer.issue(subject, granted, now)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.issuer.ttl,
            "issued_at": now.isoformat().replace("+00:00", "Z"),
        }
        if offline and principal is not None:
            body["refresh_token"] = refresh_token or create_refresh_token(
                self.logins.db, principal, service
            )
        return body


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise TokenError(400, "UNAUTHORIZED", "malformed Basic authorization header") from exc
    user, sep, secret = raw.partition(":")
    if not sep or not user:
        raise TokenError(400, "UNAUTHORIZED", "Basic authorization needs user:secret")
    return user, secret


def _error(exc: TokenError, oauth: bool = False) -> JSONResponse:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="asterfleet registry"'
    if exc.retry_after:
        headers["Retry-After"] = str(int(exc.retry_after) + 1)
    if oauth:
        code = {401: "invalid_grant", 429: "slow_down"}.get(exc.status, "invalid_request")
        content: dict[str, Any] = {"error": code, "error_description": exc.message}
    else:
        content = {"errors": [{"code": exc.code, "message": exc.message}]}
    return JSONResponse(content, status_code=exc.status, headers=headers)


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def token_router(service: TokenService) -> APIRouter:
    """``/token`` for GET (Basic) and POST (OAuth2); mount under any prefix."""
    router = APIRouter()

    def _get(request: Request, cached_only: bool = False) -> dict[str, Any]:
        """The GET flow; with ``cached_only`` it raises NeedsStore instead of
        touching the store, so repeated requests are answered on the event
        loop without a thread hop."""
        params = request.query_params
        scopes = parse_scopes(params.getlist("scope"))
        creds = _basic(request)
        principal = None
        if creds is not None:
            user, secret = creds
            account = params.get("account")
            if account and account != user:
                raise TokenError(400, "DENIED", "account does not match the Basic user")
            principal = service.login(user, secret, _client(request), cached_only)
        svc = params.get("service", service.issuer.service)
        granted = service.grant(principal, svc, scopes, cached_only)
        offline = _truthy(params.get("offline_token"))
        if offline and cached_only:
            raise NeedsStore  # a refresh token is written to the store
        TOKENS_ISSUED.labels("basic" if principal else "anonymous").inc()
        return service.token_body(principal, granted, offline, svc)

    @router.get("/token")
    async def get_token(request: Request) -> Any:
        try:
            try:
                body = _get(request, cached_only=True)
            except NeedsStore:
                body = await run_in_threadpool(_get, request)
        except ScopeError as exc:
            return _error(TokenError(400, "DENIED", str(exc)))
        except TokenError as exc:
            return _error(exc)
        return JSONResponse(body)

    def _post(form: dict[str, str], address: str) -> dict[str, Any]:
        grant_type = form.get("grant_type", "")
        svc = form.get("service", "")
        scopes = parse_scopes([form.get("scope", "")])
        offline = form.get("access_type") == "offline"
        refresh = None
        if grant_type == "password":
            principal = service.login(form.get("username", ""), form.get("password", ""), address)
        elif grant_type == "refresh_token":
            refresh = form.get("refresh_token", "")
            principal = service.from_refresh(refresh, svc)
            offline = True
        else:
            raise TokenError(400, "UNSUPPORTED", f"unsupported grant_type {grant_type!r}")
        if not form.get("client_id"):
            raise TokenError(400, "DENIED", "client_id is required")
        granted = service.grant(principal, svc, scopes)
        TOKENS_ISSUED.labels(grant_type).inc()
        body = service.token_body(principal, granted, offline, svc, refresh)
        body.pop("token")
        body["scope"] = " ".join(str(s) for s in granted if s.actions)
        return body

    @router.post("/token")
    async def post_token(request: Request) -> Any:
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            body = await run_in_threadpool(_post, form, _client(request))
        except ScopeError as exc:
            return _error(TokenError(400, "DENIED", str(exc)), oauth=True)
        except TokenError as exc:
            return _error(exc, oauth=True)
        return JSONResponse(body)

    return router


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
