"""Run a real Kamailio load balancer (tests and ``asterfleet lab``).

:class:`KamailioServer` writes the rendered config into a work directory,
checks it with ``kamailio -c``, starts Kamailio in the foreground as a
:class:`~asterfleet.runtime.process.ManagedProcess` (log on stderr, captured
in ``kamailio.log``) and waits until the JSON-RPC socket answers
``core.uptime``. Everything it writes stays in the work directory and the
paths of the :class:`KamailioConfig`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from asterfleet.errors import RpcError, UsageError
from asterfleet.kamailio.config import KamailioConfig, render_config, validate
from asterfleet.kamailio.rpc import call_sync
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for


class KamailioStartError(UsageError):
    """Kamailio refused the config or did not come up."""


class KamailioServer:
    """One Kamailio process for a :class:`KamailioConfig`."""

    def __init__(
        self,
        cfg: KamailioConfig,
        work_dir: Path,
        start_timeout: float = 15.0,
        shm_mb: int | None = None,
    ) -> None:
        validate(cfg)
        self.kamailio = require_binary("kamailio")
        self.cfg = cfg
        self.work_dir = work_dir
        self.start_timeout = start_timeout
        # Shared memory (-m): the 64 MB default runs out with ~1,000 probed
        # destinations (every OPTIONS is a transaction for fr_timer).
        self.shm_mb = shm_mb
        self.config_path = work_dir / "kamailio.cfg"
        self.log_path = work_dir / "kamailio.log"
        self.process: ManagedProcess | None = None

    @property
    def rpc_target(self) -> str:
        """The datagram socket path, for :class:`~asterfleet.kamailio.rpc.KamailioRpc`."""
        return str(self.cfg.rpc_socket)

    @property
    def http_rpc_url(self) -> str | None:
        """``http://HOST:PORT/RPC`` when the config enables JSON-RPC over HTTP."""
        return f"http://{self.cfg.rpc_http}/RPC" if self.cfg.rpc_http else None

    def argv(self) -> list[str]:
        """Foreground (-DD), log to stderr (-E), run dir and pid file in runtime_dir."""
        return [
            self.kamailio,
            "-f",
            str(self.config_path),
            "-DD",
            "-E",
            "-Y",
            str(self.cfg.runtime_dir),
            "-P",
            str(self.cfg.pid_file),
            *(["-m", str(self.shm_mb)] if self.shm_mb else []),
        ]

    def write_config(self) -> Path:
        """Render, write and ``kamailio -c`` check the config; its path."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.cfg))
        if not self.cfg.list_file.exists():
            # Kamailio refuses to start without the file; empty is a valid fleet.
            self.cfg.list_file.parent.mkdir(parents=True, exist_ok=True)
            self.cfg.list_file.write_text("")
        check = subprocess.run(
            [self.kamailio, "-c", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check.returncode != 0:
            output = "\n".join((check.stdout + check.stderr).splitlines()[-20:])
            raise KamailioStartError(
                f"kamailio -c rejected {self.config_path} (exit {check.returncode}):\n{output}"
            )
        return self.config_path

    def _answers(self) -> bool:
        call_sync(self.rpc_target, "core.uptime", timeout=1.0)
        return True

    def start(self) -> KamailioServer:
        """Start Kamailio and wait until its RPC socket answers."""
        if self.process is not None and self.process.alive():
            return self
        self.write_config()
        for stale in (self.cfg.rpc_socket, self.cfg.ctl_socket, self.cfg.pid_file):
            stale.unlink(missing_ok=True)
        self.process = ManagedProcess("kamailio", self.argv(), self.log_path).start()
        process = self.process

        def ready() -> bool:
            if not process.alive():
                raise KamailioStartError(
                    f"kamailio exited with {process.proc.returncode if process.proc else '?'}"
                )
            try:
                return self._answers()
            except RpcError:
                return False

        try:
            wait_for(ready, self.start_timeout, interval=0.1, what="Kamailio RPC")
        except (TimeoutError, KamailioStartError) as exc:
            tail = process.log_tail(30)
            self.stop()
            raise KamailioStartError(f"Kamailio did not start: {exc}\n{tail}") from exc
        return self

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM (then SIGKILL); the exit code, None if never started."""
        if self.process is None:
            return None
        code = self.process.stop(grace)
        self.cfg.rpc_socket.unlink(missing_ok=True)
        return code

    def restart(self) -> KamailioServer:
        self.stop()
        self.process = None
        return self.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else ""

    def __enter__(self) -> KamailioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
