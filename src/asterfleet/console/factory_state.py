"""The registry and the image factory inside the console process.

:func:`mount_factory` opens the factory's store (which also holds the
registry's ownership and catalogue tables), builds the registry's routes
(``/token``, ``/hooks/registry``) on the console's one identity, adds the
knots' webhook route, mounts them, and hands back what the Images and Builds
pages need. One process then serves the console, the token endpoint and the
hooks; ``asterfleet registry serve`` runs the same composition alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

from fastapi import FastAPI, Request
from sqlalchemy import Engine

from asterfleet.auth import Authenticator
from asterfleet.console.images_settings import ImagesSettings
from asterfleet.db import Database
from asterfleet.factory.db import open_store
from asterfleet.factory.web import knot_webhook_router
from asterfleet.registry.app import RegistryRoutes, registry_routes, running
from asterfleet.registry.catalogue import CatalogueSync
from asterfleet.registry.config import read_settings
from asterfleet.registry.ownership import Ownership
from asterfleet.registry.schema import create_tables


@dataclass
class FactoryState:
    settings: ImagesSettings
    engine: Engine
    identity: Database  # the one identity (the console's database)
    ownership: Ownership
    routes: RegistryRoutes
    registry_host: str

    @property
    def catalogue(self) -> CatalogueSync:
        return self.routes.catalogue.sync

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with running(self.routes):
            try:
                yield
            finally:
                self.engine.dispose()


def mount_factory(
    app: FastAPI, images: ImagesSettings | None, logins: Authenticator
) -> FactoryState | None:
    """Mount the registry routes when the console is configured for images."""
    if images is None:
        return None
    token_settings = read_settings(images.registry_dir)
    engine = create_tables(open_store(images.factory_db))
    routes = registry_routes(
        token_settings,
        engine,
        logins,
        token_ttl=images.token_ttl,
        reconcile_interval=images.reconcile_interval,
        cache_seconds=images.login_cache_seconds,
    )
    app.include_router(routes.router)
    app.include_router(knot_webhook_router(engine))
    host = images.registry_host or urlparse(token_settings.registry_url).netloc
    state = FactoryState(images, engine, logins.db, routes.ownership, routes, host)
    app.state.factory = state
    return state


class FactoryNotConfigured(Exception):
    """The Images or Knots area was asked for, but this console runs without
    a registry: pages answer with a page saying how to configure it, the
    JSON API with 503."""

    def __init__(self) -> None:
        super().__init__(
            "images and knots are not configured: start the console with "
            "--registry-dir DIR (what 'asterfleet registry config --out DIR' wrote)"
        )


# How to configure the area, shown on the page (the lab does all of it itself).
CONFIGURE_STEPS = (
    "asterfleet registry config --out /etc/asterfleet/registry "
    "--realm http://CONSOLE:8080/token --listen 127.0.0.1:5000",
    "docker-registry serve /etc/asterfleet/registry/config.yml",
    "asterfleet console --registry-dir /etc/asterfleet/registry --factory-db sqlite:///factory.db",
    "asterfleet factory worker --registry 127.0.0.1:5000 --insecure --db sqlite:///factory.db",
)


def factory_state(request: Request) -> FactoryState:
    state: FactoryState | None = getattr(request.app.state, "factory", None)
    if state is None:
        raise FactoryNotConfigured()
    return state
