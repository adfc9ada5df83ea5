"""A throwaway PostgreSQL cluster in a directory, for tests and benchmarks.

``initdb`` + ``pg_ctl`` from Debian's postgresql package, on a free loopback
port, unix socket inside the directory. PostgreSQL refuses to run as root,
so when we are root the directory is handed to the ``postgres`` user and
the tools run through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from asterfleet.errors import MissingBinary
from asterfleet.runtime.ports import free_port


def pg_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb, or MissingBinary."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if not found:
        raise MissingBinary("initdb", "postgresql")
    return Path(found[-1]).parent


class PgSandbox:
    """``start()`` → ``url``; ``stop()`` / ``start()`` again; ``destroy()``."""

    def __init__(
        self,
        base: Path | None = None,
        durable: bool = False,
        keep_in: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        #: False (tests): fsync, synchronous commit and full-page writes off.
        #: True: PostgreSQL's defaults (every commit on disk), for benchmarks.
        self.durable = durable
        #: More ``-c name=value`` settings (e.g. the capture store's).
        self.settings = dict(settings or {})
        self.bin = pg_bin_dir()
        if keep_in is not None:
            # A cluster kept between runs (a benchmark's filled store): made
            # on the first run, started again by the next ones.
            keep_in.mkdir(parents=True, exist_ok=True)
            self.dir = keep_in
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="af-pg-", dir=base))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        #: Whether the cluster was there already (``keep_in`` of an earlier run).
        self.reused = (self.data / "PG_VERSION").exists()
        if self.reused:
            return
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"]
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({result.returncode}): {result.stdout}{result.stderr}"
                f"\n{self.log_tail()}"
            )
        return result

    def start(self) -> str:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
             "-w", "-t", "60", "start"]
        )  # fmt: skip
        return self.url

    def stop(self, mode: str = "fast") -> None:
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"],
            check=False,
        )

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
