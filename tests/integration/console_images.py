"""A real console process serving the registry's token endpoint, its hooks and
the Images/Builds pages (``asterfleet console --registry-dir``), for the
integration tests of those areas."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine

from asterfleet.auth import add_user
from asterfleet.db import open_database
from asterfleet.factory.db import open_store
from asterfleet.registry.config import TokenServerSettings, write_config
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for


@dataclass
class ConsoleWithImages:
    url: str
    port: int
    registry_port: int
    settings: TokenServerSettings
    engine: Engine  # the factory's store, shared with the console process
    process: ManagedProcess

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"


@contextlib.contextmanager
def console_with_images(work: Path, users: dict[str, str]) -> Iterator[ConsoleWithImages]:
    """Start the console (users: name -> password, all operators); stop it after."""
    port, registry_port = free_port(), free_port()
    while registry_port == port:
        registry_port = free_port()
    settings = write_config(
        work / "registry",
        realm=f"http://127.0.0.1:{port}/token",
        service="asterfleet-console-test",
        listen=f"127.0.0.1:{registry_port}",
    )
    db = open_database(str(work / "console.db"))
    for name, password in users.items():
        add_user(db, name, password)
    db.close()
    factory_db = f"sqlite:///{work / 'factory.db'}"
    engine = open_store(factory_db)
    proc = ManagedProcess(
        "console",
        [
            str(Path(sys.executable).parent / "asterfleet"),
            "console",
            "--listen",
            f"127.0.0.1:{port}",
            "--etcd",
            f"127.0.0.1:{free_port()}",  # no fleet here: the pages under test do not need it
            "--db",
            str(work / "console.db"),
            "--registry-dir",
            str(work / "registry"),
            "--factory-db",
            factory_db,
        ],
        work / "console.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.alive(), proc.log_tail()
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

        wait_for(ready, 30, interval=0.1, what="the console")
        yield ConsoleWithImages(url, port, registry_port, settings, engine, proc)
    except BaseException:
        print(proc.log_tail())
        raise
    finally:
        proc.stop(grace=5)
        engine.dispose()
