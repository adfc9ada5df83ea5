"""A registry on loopback for the tests and benchmarks: the real
``docker-registry`` (Distribution) with token auth pointing at an
in-process asterfleet token server, both on free ports. Users and tokens
are the one identity (a console database in the lab's directory)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import APIRouter
from sqlalchemy import Engine

from asterfleet.auth import Authenticator
from asterfleet.db import Database, open_database
from asterfleet.registry.app import create_app, registry_routes
from asterfleet.registry.catalogue import CatalogueSync
from asterfleet.registry.config import CONFIG_FILE, TokenServerSettings, write_config
from asterfleet.registry.ownership import Ownership
from asterfleet.registry.schema import create_tables
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for
from asterfleet.storage import open_engine


@dataclass
class RegistryLab:
    directory: Path
    registry_port: int
    token_port: int
    settings: TokenServerSettings
    engine: Engine  # the registry's tables (and the factory's, when shared)
    db: Database  # the one identity: users and tokens
    ownership: Ownership
    catalogue: CatalogueSync
    registry: ManagedProcess
    #: The registry's debug listener (its own /metrics), when asked for.
    debug_port: int | None = None

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.token_port}/token"


def _registry_answers(port: int) -> bool:
    resp = httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2)
    return resp.status_code == 401 and "Bearer" in resp.headers.get("www-authenticate", "")


@contextlib.contextmanager
def registry_lab(
    directory: Path,
    db_url: str | None = None,
    service: str = "asterfleet-lab",
    reconcile_interval: float = 300.0,
    cache_seconds: float = 5.0,
    extra_routers: Callable[[Engine], Sequence[APIRouter]] = lambda _engine: (),
    debug_listen: bool = False,
) -> Iterator[RegistryLab]:
    """Start both, yield, and stop both (also when the body fails).

    ``extra_routers`` are served beside the token endpoint (the factory's
    tests pass the knots' webhooks)."""
    binary = require_binary("docker-registry")
    token_port, registry_port = free_port(), free_port()
    while registry_port == token_port:
        registry_port = free_port()
    debug_port = None
    while debug_listen and debug_port in (None, token_port, registry_port):
        debug_port = free_port()
    settings = write_config(
        directory / "registry",
        realm=f"http://127.0.0.1:{token_port}/token",
        service=service,
        listen=f"127.0.0.1:{registry_port}",
        debug_listen=f":{debug_port}" if debug_port else None,
    )
    engine = create_tables(open_engine(db_url or f"sqlite:///{directory / 'factory.db'}"))
    db = open_database(str(directory / "console.db"))
    routes = registry_routes(
        settings,
        engine,
        Authenticator(db),
        reconcile_interval=reconcile_interval,
        cache_seconds=cache_seconds,
    )
    app = create_app(routes, extra_routers=extra_routers(engine))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=token_port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="token-server", daemon=True)
    registry = ManagedProcess(
        "docker-registry",
        [binary, "serve", str(directory / "registry" / CONFIG_FILE)],
        directory / "docker-registry.log",
    )
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, what="token server")
        registry.start()
        wait_for(lambda: _registry_answers(registry_port), timeout=20, what="docker-registry")
        yield RegistryLab(
            directory=directory,
            registry_port=registry_port,
            token_port=token_port,
            settings=settings,
            engine=engine,
            db=db,
            ownership=Ownership(engine),
            catalogue=app.state.catalogue,
            registry=registry,
            debug_port=debug_port,
        )
    finally:
        registry.stop(grace=5)
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()
        db.close()
