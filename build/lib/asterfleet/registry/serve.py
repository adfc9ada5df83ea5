"""Running the standalone token server, in one process or several.

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

from asterfleet.factory.db import open_store
from asterfleet.registry.app import create_app
from asterfleet.registry.config import read_settings

ENV = "ASTERFLEET_REGISTRY_SERVE"
LOCK_FILE = "reconcile.lock"
NEVER = 10.0 * 365 * 86400

_held: list[IO[str]] = []  # the reconcile lock, held for the life of the process


@dataclass(frozen=True)
class ServeOptions:
    config_dir: str
    db: str
    token_ttl: int = 300
    reconcile_interval: float = 300.0
    cache_seconds: float = 5.0


def build_app(opts: ServeOptions, reconcile: bool = True) -> FastAPI:
    return create_app(
        read_settings(Path(opts.config_dir)),
        open_store(opts.db),
        token_ttl=opts.token_ttl,
        reconcile_interval=opts.reconcile_interval if reconcile else NEVER,
        cache_seconds=opts.cache_seconds,
    )


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
        "asterfleet.registry.serve:app_from_env",
        factory=True,
        workers=workers,
        **common,  # type: ignore[arg-type]
    )
