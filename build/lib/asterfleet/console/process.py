"""Running `asterfleet console` as a child process: for the lab, the
browser tests and the screenshot scripts alike."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, wait_for


@dataclass
class RunningConsole:
    process: ManagedProcess
    url: str

    def stop(self, grace: float = 5.0) -> None:
        self.process.stop(grace=grace)


def start_console(
    log_path: Path,
    etcd: str,
    db: str,
    cluster: str = "default",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout: float = 30.0,
) -> RunningConsole:
    """Start the console on 127.0.0.1 and wait until /healthz answers 200."""
    port = port or free_port()
    process = ManagedProcess(
        "console",
        [
            sys.executable, "-m", "asterfleet", "console",
            "--listen", f"127.0.0.1:{port}",
            "--etcd", etcd,
            "--cluster", cluster,
            "--db", db,
            *extra_args,
        ],
        log_path,
        env=env,
    ).start()  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.alive(), f"the console exited: {process.log_tail()}"
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

    try:
        wait_for(ready, timeout, interval=0.1, what=f"the console at {url}")
    except BaseException:
        process.stop()
        raise
    return RunningConsole(process, url)
