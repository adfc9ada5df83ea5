"""The registry and the image factory inside the console process.

:func:`mount_factory` opens the factory's store, builds the registry's
routes (``/token``, ``/hooks/registry``, ``/hooks/knots/…``) with the
identity the settings choose, mounts them, and hands back what the Images
and Builds pages need. One process then serves the console, the token
endpoint and the hooks; ``asterfleet registry serve`` still runs them alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlparse

from fastapi import FastAPI, HTTPException, Request, status
from sqlalchemy import Engine

from asterfleet.console.images_settings import ImagesSettings
from asterfleet.db import Database
from asterfleet.factory.db import DEFAULT_DB, open_store
from asterfleet.registry.app import RegistryRoutes, registry_routes, running
from asterfleet.registry.catalogue import CatalogueSync
from asterfleet.registry.config import read_settings
from asterfleet.registry.console_identity import ConsoleIdentity
from asterfleet.registry.identity import IdentityStore, Principal, SqlIdentity


@dataclass
class FactoryState:
    settings: ImagesSettings
    engine: Engine
    identity: IdentityStore
    routes: RegistryRoutes
    registry_host: str

    @property
    def catalogue(self) -> CatalogueSync:
        return self.routes.catalogue.sync

    def registry_principal(self, username: str, console_role: str) -> Principal:
        """The registry's view of a logged-in console user."""
        found = self.identity.principal(username)
        if found is not None:
            return found
        return Principal(username=username, is_admin=console_role == "admin", via="service")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with running(self.routes):
            try:
                yield
            finally:
                self.engine.dispose()


def mount_factory(app: FastAPI, images: ImagesSettings | None, db: Database) -> FactoryState | None:
    """Mount the registry routes when the console is configured for images."""
    if images is None:
        return None
    token_settings = read_settings(images.registry_dir)
    engine = open_store(images.factory_db or DEFAULT_DB)
    identity: IdentityStore = (
        ConsoleIdentity(db, engine) if images.identity == "console" else SqlIdentity(engine)
    )
    routes = registry_routes(
        token_settings,
        engine,
        identity,
        token_ttl=images.token_ttl,
        reconcile_interval=images.reconcile_interval,
        cache_seconds=images.login_cache_seconds,
    )
    app.include_router(routes.router)
    host = images.registry_host or urlparse(token_settings.registry_url).netloc
    state = FactoryState(images, engine, identity, routes, host)
    app.state.factory = state
    return state


def factory_state(request: Request) -> FactoryState:
    state: FactoryState | None = getattr(request.app.state, "factory", None)
    if state is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "images and builds are not configured: start the console with "
            "--registry-dir DIR (what 'asterfleet registry config --out DIR' wrote)",
        )
    return state
