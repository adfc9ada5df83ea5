"""The registry's HTTP side: the token router and the registry notification
hook feeding the catalogue; :func:`create_app` wraps them (plus any routers
the caller composes in, such as the knots' webhooks) with ``/metrics`` and
``/healthz`` for ``asterfleet registry serve``.

``/metrics`` here needs a login, as the console's does: a bearer token with
scope ``metrics`` (or ``read``) of the one identity. The token server faces
registry clients, so it may face the internet; ``registry serve
--metrics-listen`` serves the same metrics without a login on a separate,
private address instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from asterfleet.auth import Authenticator, verify_token
from asterfleet.registry import keys
from asterfleet.registry.catalogue import (
    CatalogueSync,
    RegistryClient,
    repositories_in_notification,
)
from asterfleet.registry.config import TokenServerSettings
from asterfleet.registry.metrics import NOTIFICATIONS
from asterfleet.registry.ownership import Ownership
from asterfleet.registry.server import TokenService, token_router
from asterfleet.registry.tokens import Issuer

log = structlog.get_logger("asterfleet.registry.app")


def notifications_router(secret: str, notify: Callable[[set[str]], None]) -> APIRouter:
    """``POST /hooks/registry``: the registry's notification endpoint."""
    router = APIRouter()
    expected = f"Bearer {secret}"

    @router.post("/hooks/registry")
    async def registry_events(request: Request) -> Response:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            NOTIFICATIONS.labels("unauthorized").inc()
            return JSONResponse({"error": "bad notification secret"}, status_code=401)
        try:
            envelope = json.loads(await request.body())
        except ValueError:
            NOTIFICATIONS.labels("malformed").inc()
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        repos = repositories_in_notification(envelope if isinstance(envelope, dict) else {})
        NOTIFICATIONS.labels("accepted").inc()
        if repos:
            notify(repos)
        return Response(status_code=200)

    return router


@dataclass
class CatalogueLoop:
    """Repositories named by notifications are synced promptly; everything
    is reconciled every ``interval`` seconds."""

    sync: CatalogueSync
    interval: float = 300.0
    retry_after: float = 2.0
    # Distribution sends "manifest pushed" before it writes the tag: a
    # notified repository is synced at once and again this much later.
    settle: float = 2.0
    pending: set[str] = field(default_factory=set)
    later: dict[str, float] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self, repos: set[str]) -> None:
        self.pending |= repos
        due = asyncio.get_running_loop().time() + self.settle
        for repo in repos:
            self.later[repo] = due
        self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time()
        while True:
            now = loop.time()
            if now >= next_reconcile:
                next_reconcile = now + self.interval
                try:
                    await run_in_threadpool(self.sync.reconcile)
                except (httpx.HTTPError, OSError) as exc:
                    log.warning("catalogue_reconcile_failed", error=str(exc))
            for repo, due in list(self.later.items()):
                if due <= loop.time():
                    del self.later[repo]
                    self.pending.add(repo)
            failed: set[str] = set()
            while self.pending:
                repo = self.pending.pop()
                try:
                    await run_in_threadpool(self.sync.sync_repository, repo)
                except (httpx.HTTPError, OSError) as exc:
                    log.warning("catalogue_sync_failed", repository=repo, error=str(exc))
                    failed.add(repo)
            wait = max(0.1, min([next_reconcile, *self.later.values()]) - loop.time())
            if failed:
                # A repository a notification named is retried soon, not at
                # the next reconcile (which may be minutes away).
                self.pending |= failed
                wait = min(wait, self.retry_after)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), wait)


@dataclass
class RegistryRoutes:
    """The registry's HTTP side, ready to mount in any app: the token
    endpoint and the notification hook; plus the catalogue loop the app runs
    in the background and the client it uses."""

    router: APIRouter
    catalogue: CatalogueLoop
    client: RegistryClient
    service: TokenService

    @property
    def ownership(self) -> Ownership:
        return self.service.ownership


def registry_routes(
    settings: TokenServerSettings,
    engine: Engine,
    logins: Authenticator,
    token_ttl: int = 300,
    reconcile_interval: float = 300.0,
    cache_seconds: float = 5.0,
) -> RegistryRoutes:
    material = keys.load(settings.directory)  # parsed once, shared by every request
    issuer = Issuer(material, settings.issuer, settings.service, ttl=token_ttl)
    service = TokenService(
        logins=logins, ownership=Ownership(engine), issuer=issuer, cache_seconds=cache_seconds
    )
    client = RegistryClient(settings.registry_url, issuer)
    loop_state = CatalogueLoop(CatalogueSync(engine, client), interval=reconcile_interval)
    router = APIRouter(include_in_schema=False)
    router.include_router(token_router(service))
    router.include_router(notifications_router(settings.notify_secret, loop_state.notify))
    return RegistryRoutes(router, loop_state, client, service)


@contextlib.asynccontextmanager
async def running(routes: RegistryRoutes) -> AsyncIterator[None]:
    """Run the catalogue loop for the life of the app."""
    task = asyncio.create_task(routes.catalogue.run(), name="catalogue")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        routes.client.close()


def metrics_reader(logins: Authenticator) -> Callable[[Request], Any]:
    """The dependency guarding ``/metrics``: 401 without a live bearer token,
    403 for one without scope ``metrics`` (or ``read``)."""

    async def check(request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        info = None
        if scheme.lower() == "bearer" and token.strip():
            info = await run_in_threadpool(verify_token, logins.db, token.strip())
        if info is None:
            raise HTTPException(
                401,
                "/metrics needs 'Authorization: Bearer <token>': a token with scope "
                "'metrics' ('asterfleet users token create prometheus --scopes metrics')",
                headers={"WWW-Authenticate": 'Bearer realm="asterfleet"'},
            )
        if not info.principal(via="api").may_scrape_metrics:
            raise HTTPException(403, "this token lacks scope 'metrics'")

    return check


def create_app(
    routes: RegistryRoutes,
    extra_routers: Sequence[APIRouter] = (),
    metrics: CollectorRegistry = REGISTRY,
) -> FastAPI:
    """The standalone app around :func:`registry_routes`; ``extra_routers`` are
    what the composing caller serves beside the registry (``asterfleet
    registry serve``: the knots' webhooks); ``metrics`` is what ``/metrics``
    shows (several workers: every worker's, merged)."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with running(routes):
            yield

    app = FastAPI(title="asterfleet registry token server", lifespan=lifespan)
    app.include_router(routes.router)
    for extra in extra_routers:
        app.include_router(extra)
    app.state.catalogue = routes.catalogue.sync
    app.state.routes = routes

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "service": routes.service.issuer.service}

    @app.get("/metrics", dependencies=[Depends(metrics_reader(routes.service.logins))])
    async def metrics_text() -> Response:
        # Off the event loop: with several workers this reads their files.
        text = await run_in_threadpool(generate_latest, metrics)
        return PlainTextResponse(text, media_type=CONTENT_TYPE_LATEST)

    return app
