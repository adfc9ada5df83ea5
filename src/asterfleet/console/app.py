"""The console application: ``create_app(settings)`` builds the FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from asterfleet import __version__
from asterfleet.auth import Authenticator, LoginLimiter, bootstrap_admin
from asterfleet.console import (
    api,
    auth,
    balancers,
    builds,
    calls,
    eventlog,
    events,
    fleet,
    images,
    knot_admin,
    node_page,
    retention,
    rollouts,
    stats,
)
from asterfleet.console.addressbook import AddressBook
from asterfleet.console.areas import Area
from asterfleet.console.bodylimit import BodyLimit
from asterfleet.console.factory_state import (
    CONFIGURE_STEPS,
    FactoryNotConfigured,
    mount_factory,
)
from asterfleet.console.metrics import ConsoleMetrics
from asterfleet.console.monitor import FleetMonitor
from asterfleet.console.security import (
    LoginRequired,
    csrf_guard,
    login_url,
    metrics_reader,
    page_user,
)
from asterfleet.console.settings import ConsoleSettings
from asterfleet.console.state import ConsoleState
from asterfleet.console.transitions import EventDraft
from asterfleet.console.web import STATIC_DIR, make_templates, render
from asterfleet.db import Database, open_database
from asterfleet.etcd_client import Etcd
from asterfleet.fleet.keys import Keyspace
from asterfleet.runtime.tasks import supervise

log = structlog.get_logger("asterfleet.console")

# Every area, in navigation order. Adding one (the Calls page, the Images page)
# is one entry here and its router module; the base template lists them.
AREAS = (
    Area("fleet", "Fleet", "/fleet", fleet.router),
    Area("node", "Node", "/fleet", node_page.router, in_nav=False),
    Area("balancers", "Balancers", "/balancers", balancers.router),
    Area("rollouts", "Rollouts", "/rollouts", rollouts.router),
    Area("events", "Events", "/events", events.router),
    Area("calls", "Calls", "/calls", calls.router),
    Area("stats", "Statistics", "/stats", stats.router),
    Area("images", "Images", "/images", images.router),
    # Adding, editing, removing knots: before "knots" so /knots/new is not a knot.
    Area("knot_admin", "Add knot", "/knots/new", knot_admin.router, in_nav=False),
    Area("knots", "Knots", "/knots", builds.router),
)

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
}


def create_app(
    settings: ConsoleSettings,
    *,
    db: Database | None = None,
    etcd_factory: Callable[[str], Etcd] = Etcd,
) -> FastAPI:
    """The console for one cluster. Opens (and migrates) the store now; etcd
    clients and the live watch start with the app's lifespan."""
    database = db or open_database(settings.db_url)
    created = bootstrap_admin(
        database,
        settings.admin_password.get_secret_value() if settings.admin_password else None,
    )
    if created is not None:
        log.info("admin_created", user=created.username)
    ks = Keyspace(settings.cluster)
    metrics = ConsoleMetrics()
    state = ConsoleState(
        settings=settings,
        db=database,
        ks=ks,
        templates=make_templates(),
        metrics=metrics,
        logins=Authenticator(
            database, LoginLimiter(settings.login_max_failures, settings.login_window)
        ),
        areas=list(AREAS),
    )

    addresses = AddressBook(database, ks.cluster)
    call_stats = stats.CallStatsMetrics(metrics.registry)

    async def record(drafts: Sequence[EventDraft]) -> None:
        await asyncio.to_thread(eventlog.record, database, ks.cluster, drafts)
        for d in drafts:
            metrics.events.labels(d.kind).inc()
            log.info("fleet_event", kind=d.kind, node=d.node_id, actor=d.actor, message=d.message)

    def trimmed(done: retention.Trimmed) -> None:
        metrics.history_trimmed.labels("events").inc(done.events)
        metrics.history_trimmed.labels("addresses").inc(done.addresses)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.etcd = etcd_factory(settings.etcd)
        watch_etcd: Etcd | None = None
        background: dict[str, Callable[[], Awaitable[None]]] = {}
        if settings.watch:
            watch_etcd = etcd_factory(settings.etcd)
            state.monitor = FleetMonitor(
                watch_etcd,
                ks,
                record,
                metrics,
                members=lambda: asyncio.to_thread(eventlog.members, database, ks.cluster),
                observe=lambda view: asyncio.to_thread(addresses.observe, view),
            )
            background["fleet monitor"] = state.monitor.run
        if settings.capture_db and settings.watch:
            background["call stats"] = lambda: stats.refresh_metrics(state, call_stats)
        if settings.history_retention:
            retention_s = settings.history_retention
            background["history retention"] = lambda: retention.keep_trimmed(
                database, ks.cluster, retention_s, trimmed
            )
        never = asyncio.Event()  # the tasks are cancelled at shutdown
        for name, loop in background.items():
            state.tasks.append(asyncio.create_task(supervise(name, loop, never, log), name=name))
        log.info("console_started", cluster=ks.cluster, etcd=settings.etcd)
        try:
            async with factory.running() if factory else contextlib.nullcontext():
                yield
        finally:
            for task in state.tasks:
                task.cancel()
            for task in state.tasks:
                with contextlib.suppress(BaseException):
                    await task
            state.tasks.clear()
            await state.etcd.close()
            if watch_etcd is not None:
                await watch_etcd.close()

    app = FastAPI(
        title="asterfleet console",
        version=__version__,
        description=(
            "See and steer an asterfleet cluster. Authenticate with "
            "`Authorization: Bearer <token>` (create one with `asterfleet users token create`)."
        ),
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(csrf_guard)],
    )
    app.state.console = state
    factory = mount_factory(app, settings.images, state.logins)  # /token, hooks, Images, Builds

    @app.exception_handler(FactoryNotConfigured)
    async def _factory_off(request: Request, exc: FactoryNotConfigured) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, status_code=503)
        try:
            user = await page_user(request)
        except LoginRequired as login:
            return RedirectResponse(login_url(login.next_path), status_code=303)
        return render(
            request,
            "factory_off.html",
            user,
            area="knots" if request.url.path.startswith("/knots") else "images",
            reason=str(exc),
            steps=CONFIGURE_STEPS,
        )

    @app.exception_handler(LoginRequired)
    async def _to_login(_request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # Behind a login: a token with scope `metrics` (Prometheus' bearer token),
    # or `asterfleet console --metrics-listen` for a listener on a private address.
    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_reader)])
    async def _metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", include_in_schema=False)
    async def _health() -> dict[str, object]:
        monitor = state.monitor
        return {"ok": True, "etcd_connected": bool(monitor and monitor.connected)}

    app.include_router(auth.router)
    for area in state.areas:
        app.include_router(area.router)
    app.include_router(api.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.add_middleware(BodyLimit)  # outermost: before routes, CSRF forms and webhook lookups
    return app
