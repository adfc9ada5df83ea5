"""A registry on loopback for the lab and the tests: the real
``docker-registry`` (Distribution) with token auth pointing at an
in-process asterfleet token server, both on free ports."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import Engine

from asterfleet.factory.db import open_store
from asterfleet.registry.app import create_app
from asterfleet.registry.catalogue import CatalogueSync
from asterfleet.registry.config import CONFIG_FILE, TokenServerSettings, write_config
from asterfleet.registry.identity import SqlIdentity
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for


@dataclass
class RegistryLab:
    directory: Path
    registry_port: int
    token_port: int
    settings: TokenServerSettings
    engine: Engine
    identity: SqlIdentity
    catalogue: CatalogueSync
    registry: ManagedProcess

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
) -> Iterator[RegistryLab]:
    """Start both, yield, and stop both (also when the body fails)."""
    binary = require_binary("docker-registry")
    token_port, registry_port = free_port(), free_port()
    while registry_port == token_port:
        registry_port = free_port()
    settings = write_config(
        directory / "registry",
        realm=f"http://127.0.0.1:{token_port}/token",
        service=service,
        listen=f"127.0.0.1:{registry_port}",
    )
    engine = open_store(db_url or f"sqlite:///{directory / 'factory.db'}")
    app = create_app(
        settings, engine, reconcile_interval=reconcile_interval, cache_seconds=cache_seconds
    )
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
            identity=SqlIdentity(engine),
            catalogue=app.state.catalogue,
            registry=registry,
        )
    finally:
        registry.stop(grace=5)
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()
