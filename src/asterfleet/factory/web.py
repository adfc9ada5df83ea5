"""The knots' webhook endpoint: ``POST /hooks/knots/{name}``.

Verifies the provider's signature with the knot's secret, ignores repeated
deliveries (by their signed content: ref and commit), filters by branch or tag, and queues a build
(or joins the one already queued for that ref).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from asterfleet.errors import UsageError
from asterfleet.factory import queue, triggers
from asterfleet.factory.db import utcnow
from asterfleet.factory.knot import wants_ref
from asterfleet.factory.schema import factory_deliveries
from asterfleet.factory.store import get_knot
from asterfleet.sealing import SealedUnreadable

log = structlog.get_logger("asterfleet.factory.web")

DELIVERIES = Counter(
    "asterfleet_factory_webhook_deliveries_total", "Knot webhook deliveries", ["result"]
)


def first_delivery(engine: Engine, knot: str, delivery_id: str) -> bool:
    """Record a delivery's key; False when it was seen before."""
    try:
        with engine.begin() as conn:
            seen = conn.execute(
                select(factory_deliveries.c.delivery).where(
                    factory_deliveries.c.knot == knot,
                    factory_deliveries.c.delivery == delivery_id,
                )
            ).first()
            if seen:
                return False
            conn.execute(
                insert(factory_deliveries).values(
                    knot=knot, delivery=delivery_id, received_at=utcnow()
                )
            )
    except IntegrityError:
        return False
    return True


def handle_delivery(
    engine: Engine, name: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, Any]]:
    """The webhook logic without HTTP: (status, JSON body)."""
    try:
        knot = get_knot(engine, name)
    except SealedUnreadable as exc:
        log.error("webhook_secret_unreadable", knot=name, reason=str(exc))
        return 503, {"error": f"knot {name!r}: its webhook secret cannot be read here"}
    except UsageError:
        return 404, {"error": f"no knot {name!r}"}
    secret = knot.triggers.webhook_secret
    if not secret:
        return 404, {"error": f"knot {name!r} has no webhook trigger"}
    try:
        provider = triggers.verify(headers, body, secret, knot.triggers.webhook_provider)
        delivery = triggers.parse(provider, headers, body)
    except triggers.WebhookError as exc:
        DELIVERIES.labels("rejected").inc()
        log.info("webhook_rejected", knot=name, reason=str(exc))
        return exc.status, {"error": str(exc)}
    if not first_delivery(engine, name, delivery.content_key):
        DELIVERIES.labels("duplicate").inc()
        return 200, {"ignored": "repeated delivery", "delivery": delivery.delivery_id}
    if delivery.ref is None:
        DELIVERIES.labels("ignored").inc()
        return 200, {"ignored": f"{delivery.event or 'event'} is not a push"}
    if not wants_ref(knot, delivery.ref):
        DELIVERIES.labels("filtered").inc()
        return 200, {"ignored": f"{delivery.ref} does not match the knot's branch or tag pattern"}
    result = queue.enqueue(engine, name, delivery.ref, delivery.sha, f"webhook:{provider}")
    DELIVERIES.labels("joined" if result.joined else "queued").inc()
    log.info(
        "webhook_build",
        knot=name,
        ref=delivery.ref,
        build=result.build.number,
        joined=result.joined,
    )
    return 202, {"build": result.build.number, "joined": result.joined, "ref": delivery.ref}


def knot_webhook_router(engine: Engine) -> APIRouter:
    router = APIRouter()

    @router.post("/hooks/knots/{name}")
    async def knot_webhook(name: str, request: Request) -> JSONResponse:
        body = await request.body()
        headers = dict(request.headers)
        status, content = await run_in_threadpool(handle_delivery, engine, name, headers, body)
        return JSONResponse(content, status_code=status)

    return router
