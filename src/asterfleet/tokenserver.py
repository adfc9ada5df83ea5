"""The standalone token server (``asterfleet registry serve``), in one
process or several: the registry's token endpoint and catalogue hook, on the
console's one identity, with the knots' webhooks beside them. This module
composes the registry and the factory; neither imports the other's app.

With ``--workers N`` uvicorn starts N processes that each build the app from
:func:`app_from_env` (the options travel in an environment variable, never
in a command line). Every worker answers ``/token`` and the hooks; only the
one holding the reconcile lock in the config directory runs the periodic
catalogue reconcile, so N workers do not reconcile N times.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from fastapi import FastAPI

from asterfleet.auth import Authenticator
from asterfleet.db import default_url, open_database
from asterfleet.factory.db import open_store
from asterfleet.factory.web import knot_webhook_router
from asterfleet.registry.app import create_app, registry_routes
from asterfleet.registry.config import read_settings
from asterfleet.registry.schema import create_tables

ENV = "ASTERFLEET_REGISTRY_SERVE"
NAME = "asterfleet.tokenserver"
LOCK_FILE = "reconcile.lock"
NEVER = 10.0 * 365 * 86400

_held: list[IO[str]] = []  # the reconcile lock, held for the life of the process


@dataclass(frozen=True)
class ServeOptions:
    config_dir: str
    db: str | None  # the factory's store (knots, builds, registry tables)
    console_db: str | None = None  # the one identity: users and tokens
    token_ttl: int = 300
    reconcile_interval: float = 300.0
    cache_seconds: float = 5.0


def build_app(opts: ServeOptions, reconcile: bool = True) -> FastAPI:
    engine = create_tables(open_store(opts.db))
    routes = registry_routes(
        read_settings(Path(opts.config_dir)),
        engine,
        # ASTERFLEET_DB meant the factory's database here, never the console's.
        Authenticator(open_database(opts.console_db or default_url(legacy=False))),
        token_ttl=opts.token_ttl,
        reconcile_interval=opts.reconcile_interval if reconcile else NEVER,
        cache_seconds=opts.cache_seconds,
    )
    return create_app(routes, extra_routers=[knot_webhook_router(engine)])


def _take_reconcile_lock(config_dir: str) -> bool:
    f = open(Path(config_dir) / LOCK_FILE, "a")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return False
    _held.append(f)
    return True


def app_from_env() -> FastAPI:
    """uvicorn's app factory in each worker process."""
    opts = ServeOptions(**json.loads(os.environ[ENV]))
    return build_app(opts, reconcile=_take_reconcile_lock(opts.config_dir))


def serve(opts: ServeOptions, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    common = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "loop": "auto",  # uvloop when installed
        "http": "auto",  # httptools when installed
        "backlog": 4096,
    }
    if workers <= 1:
        uvicorn.run(build_app(opts), **common)  # type: ignore[arg-type]
        return
    os.environ[ENV] = json.dumps(asdict(opts))
    uvicorn.run(
        f"{NAME}:app_from_env",
        factory=True,
        workers=workers,
        **common,  # type: ignore[arg-type]
    )
