"""The standalone token server (``asterfleet registry serve``), in one
process or several: the registry's token endpoint and catalogue hook, on the
console's one identity, with the knots' webhooks beside them. This module
composes the registry and the factory; neither imports the other's app.

With ``--workers N`` uvicorn starts N processes that each build the app from
:func:`app_from_env` (the options travel in an environment variable, never
in a command line). Every worker answers ``/token`` and the hooks; only the
one holding the reconcile lock in the config directory runs the periodic
catalogue reconcile, so N workers do not reconcile N times.

Metrics with N workers use prometheus_client's multiprocess mode: the
supervisor makes a private directory (0700, fresh and empty at every start,
removed at exit) and names it in ``PROMETHEUS_MULTIPROC_DIR`` before it
starts the workers; each worker writes its metrics to its own files there,
and ``/metrics`` (on any worker, or ``--metrics-listen`` in the supervisor)
merges every file. Counters are summed over every worker this server has
run: a worker that dies keeps its counts, its replacement counts from zero
in new files, so nothing is lost or counted twice. When a worker exits the
supervisor marks it dead, which drops its share of the live gauges
(``asterfleet_registry_workers``). Counts start at zero when the server
itself restarts, as for any process; Prometheus' ``rate()`` handles that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from asterfleet.auth import Authenticator
from asterfleet.db import default_url, open_database
from asterfleet.factory.db import open_store
from asterfleet.factory.web import knot_webhook_router
from asterfleet.registry.app import create_app, registry_routes
from asterfleet.registry.config import read_settings
from asterfleet.registry.schema import create_tables

if TYPE_CHECKING:
    import uvicorn

ENV = "ASTERFLEET_REGISTRY_SERVE"
NAME = "asterfleet.tokenserver"
LOCK_FILE = "reconcile.lock"
NEVER = 10.0 * 365 * 86400
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# livesum: the workers alive now. A dead worker's 1 goes when the supervisor
# marks it dead (and so before its replacement adds its own).
WORKERS = Gauge(
    "asterfleet_registry_workers",
    "Token server processes serving requests",
    multiprocess_mode="livesum",
)

_held: list[IO[str]] = []  # the reconcile lock, held for the life of the process


@dataclass(frozen=True)
class ServeOptions:
    config_dir: str
    db: str | None  # the factory's store (knots, builds, registry tables)
    console_db: str | None = None  # the one identity: users and tokens
    token_ttl: int = 300
    reconcile_interval: float = 300.0
    cache_seconds: float = 5.0


def merged_metrics(directory: str) -> CollectorRegistry:
    """What every worker's metrics files in ``directory`` add up to."""
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def build_app(
    opts: ServeOptions, reconcile: bool = True, metrics: CollectorRegistry = REGISTRY
) -> FastAPI:
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
    WORKERS.set(1)
    return create_app(routes, extra_routers=[knot_webhook_router(engine)], metrics=metrics)


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
    return build_app(
        opts,
        reconcile=_take_reconcile_lock(opts.config_dir),
        metrics=merged_metrics(os.environ[MULTIPROC_ENV]),
    )


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """A private directory for the workers' metrics files, for the life of
    the server: new (so no stale counts from an earlier run), mode 0700
    (mkdtemp's), under $TMPDIR (a tmpfs there keeps the writes in memory)."""
    path = tempfile.mkdtemp(prefix="asterfleet-registry-metrics-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _supervisor(config: uvicorn.Config, metrics_dir: str) -> Callable[[], None]:
    """uvicorn's worker supervisor, marking each worker dead in the metrics
    directory once it has exited (killed, crashed, retired or stopped)."""
    from prometheus_client.multiprocess import mark_process_dead
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def _pids(self) -> set[int]:
            return {p.pid for p in self.processes if p.pid is not None}

        def _reaping(self, step: Callable[[], None]) -> None:
            before = self._pids()
            step()
            for pid in before - self._pids():
                mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]

        def keep_subprocess_alive(self) -> None:  # a dead worker is replaced
            self._reaping(super().keep_subprocess_alive)

        def handle_signals(self) -> None:  # SIGHUP replaces all, SIGTTOU retires one
            self._reaping(super().handle_signals)

        def run(self) -> None:
            try:
                super().run()
            finally:
                for pid in self._pids():
                    mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]

    return Supervisor(config, sockets=[config.bind_socket()]).run


def serve(
    opts: ServeOptions,
    host: str,
    port: int,
    workers: int = 1,
    metrics_listen: str | None = None,
) -> None:
    """Serve until stopped; ``metrics_listen``: also /metrics without a login
    there (UsageError when that address cannot be bound)."""
    import uvicorn

    from asterfleet.metrics import serve as serve_metrics

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
        if metrics_listen:
            serve_metrics(metrics_listen, REGISTRY)
        uvicorn.run(build_app(opts), **common)  # type: ignore[arg-type]
        return
    with metrics_directory() as metrics_dir:
        if metrics_listen:
            serve_metrics(metrics_listen, merged_metrics(metrics_dir))
        # The workers are spawned: they read both when they import the app.
        os.environ[ENV] = json.dumps(asdict(opts))
        os.environ[MULTIPROC_ENV] = metrics_dir
        config = uvicorn.Config(
            f"{NAME}:app_from_env",
            factory=True,
            workers=workers,
            **common,  # type: ignore[arg-type]
        )
        _supervisor(config, metrics_dir)()
