"""Run SIPp as the fleet's SIP peers: UAS instances stand in for Asterisk boxes,
UAC instances generate call load through the balancer.

Both write SIPp's statistics CSV (``-trace_stat -stf FILE -fd N``) so counts
are on disk while they run, and SIPp writes a last row when it exits.
Findings on SIPp 3.6.1 that shaped this module:

* Each instance needs its own ``-cp`` control port: with an explicit ``-cp``
  SIPp exits on a clash ("Unable to bind remote control socket"). Auto-chosen
  ports are retried on such a clash. (The control socket binds to 0.0.0.0;
  SIPp 3.6.1 has no option to narrow it.)
* ``-nostdin`` runs without a terminal; ``-bg`` is not used because it forks
  away from the process we manage. Without a tty SIPp prints its screens only
  at exit, so logs stay small.
* SIGUSR1 is the graceful stop: no new calls, calls in progress run to their
  end, then SIPp exits 0 with the final statistics row written. SIGTERM stops
  at once (final row written too).
* ``-aa`` answers in-dialog OPTIONS/INFO/NOTIFY/UPDATE with 200; without it
  such a request is an unexpected message that aborts the call.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path

from asterfleet.errors import UsageError
from asterfleet.runtime.ports import free_port, free_port_both
from asterfleet.runtime.process import ManagedProcess, require_binary
from asterfleet.sipp.stats import SippError, SippStats, read_stat_file

SCENARIO_PACKAGE = "asterfleet.sipp"
SCENARIOS = ("uas.xml", "uas_401.xml", "uas_503.xml", "uas_ring_503.xml", "uac.xml")
TRANSPORT_MODES = {"udp": "u1", "tcp": "t1"}
_SIPP_MODES = ("u1", "un", "ui", "t1", "tn")
_START_ATTEMPTS = 3


def parse_counts_csv(text: str) -> dict[str, int]:
    """The last complete row of a ``-trace_counts`` file, by column name."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].rstrip(";").split(";")
    for line in reversed(lines[1:]):
        cells = line.rstrip(";").split(";")
        if len(cells) != len(header):
            continue  # a row still being written
        out: dict[str, int] = {}
        for name, cell in zip(header[2:], cells[2:], strict=True):
            if cell.strip().isdigit():
                out[name] = int(cell)
        return out
    return {}


_MSG_HEADER = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n"
    r"(?:UDP|TCP|TLS|SCTP) message (received|sent) \[\d+\] bytes :\n\n([^\r\n]*)",
    re.MULTILINE,
)


def parse_message_log(text: str) -> list[tuple[float, str, str]]:
    """``-trace_msg`` entries as (epoch seconds, 'received'|'sent', first line).

    SIPp writes local time; it is read back in this machine's time zone.
    """
    out: list[tuple[float, str, str]] = []
    for m in _MSG_HEADER.finditer(text):
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        out.append((stamp, m.group(2), m.group(3)))
    return out


# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


def scenario_path(name: str, workdir: Path) -> Path:
    """A filesystem path to a packaged scenario (copied into ``workdir`` when
    the package is not installed as plain files)."""
    if name not in SCENARIOS:
        raise UsageError(f"unknown SIPp scenario {name!r}: choose one of {', '.join(SCENARIOS)}")
    resource = resources.files(SCENARIO_PACKAGE).joinpath("scenarios", name)
    if isinstance(resource, Path) and resource.is_file():
        return resource
    target = workdir / name
    target.write_bytes(resource.read_bytes())
    return target


def _resolve_scenario(scenario: str | Path, workdir: Path) -> Path:
    if isinstance(scenario, Path):
        if not scenario.is_file():
            raise UsageError(f"SIPp scenario file {scenario} does not exist")
        return scenario
    return scenario_path(scenario, workdir)


def _mode(transport: str) -> str:
    t = transport.lower()
    if t in TRANSPORT_MODES:
        return TRANSPORT_MODES[t]
    if t in _SIPP_MODES:
        return t
    raise UsageError(
        f"SIPp transport {transport!r} is not one of udp, tcp (or a SIPp mode "
        f"{', '.join(_SIPP_MODES)})"
    )


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


class _SippProcess:
    """Common start/stop/stats machinery; see SippUas and SippUac."""

    role = "sipp"

    def __init__(
        self,
        workdir: Path,
        name: str,
        host: str,
        port: int | None,
        transport: str,
        control_port: int | None,
        stat_interval: int,
        extra_args: Sequence[str],
        env: Mapping[str, str] | None,
    ) -> None:
        if stat_interval < 1:
            raise UsageError(f"stat_interval must be at least 1 second, got {stat_interval}")
        self.workdir = Path(workdir)
        self.name = name
        self.host = host
        self.mode = _mode(transport)
        self.transport = "tcp" if self.mode.startswith("t") else "udp"
        self._fixed_port = port
        self._fixed_control_port = control_port
        self.port = port or 0
        self.control_port = control_port or 0
        self.stat_interval = stat_interval
        self.extra_args = list(extra_args)
        self.env = env
        self.stat_path = self.workdir / f"{name}.csv"
        self.log_path = self.workdir / f"{name}.log"
        self.error_path = self.workdir / f"{name}_errors.log"
        self.process: ManagedProcess | None = None

    # Subclasses provide the role-specific arguments.
    def _role_args(self) -> list[str]:
        raise NotImplementedError

    def _pick_ports(self) -> None:
        if self._fixed_port is None:
            self.port = (
                free_port_both(self.host)
                if self.transport == "tcp"
                else free_port(socket.SOCK_DGRAM, self.host)
            )
        if self._fixed_control_port is None:
            self.control_port = free_port(socket.SOCK_DGRAM, "0.0.0.0")

    def argv(self) -> list[str]:
        """The full SIPp command line (ports as currently chosen)."""
        return [
            require_binary("sipp"),
            *self._role_args(),
            "-i", self.host,
            "-p", str(self.port),
            "-t", self.mode,
            "-cp", str(self.control_port),
            "-nostdin",
            "-aa",
            "-trace_stat", "-stf", str(self.stat_path), "-fd", str(self.stat_interval),
            "-trace_err", "-error_file", str(self.error_path),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> _SippProcess:
        """Start SIPp and wait until its first statistics row is on disk."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(_START_ATTEMPTS):
            self._pick_ports()
            self.stat_path.unlink(missing_ok=True)
            proc = ManagedProcess(
                self.name, self.argv(), self.log_path, env=self.env, cwd=self.workdir
            )
            self.process = proc.start()
            outcome = self._wait_started(timeout)
            if outcome is None:
                return self
            last_error = outcome
            proc.stop(grace=2.0)
            clash = "already in use" in outcome.lower()
            fixed = self._fixed_port is not None and self._fixed_control_port is not None
            if not clash or fixed:
                break
        raise SippError(f"SIPp {self.role} {self.name!r} did not start: {last_error}")

    def _wait_started(self, timeout: float) -> str | None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                # A UAC with -m can legitimately finish quickly.
                if self.process.proc is not None and self.process.proc.returncode == 0:
                    return None
                return f"exited with code {self._returncode()}: {self.process.log_tail(10)}"
            try:
                read_stat_file(self.stat_path)
                return None
            except SippError:
                time.sleep(0.05)
        return f"no statistics in {self.stat_path} after {timeout:g}s: {self.process.log_tail(10)}"

    def _returncode(self) -> int | None:
        if self.process is None or self.process.proc is None:
            return None
        return self.process.proc.poll()

    @property
    def returncode(self) -> int | None:
        """SIPp's exit code once it has exited (0: all calls succeeded)."""
        return self._returncode()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stats(self) -> SippStats:
        """The latest statistics row (at most ``stat_interval`` seconds old
        while running; final once SIPp has exited)."""
        return read_stat_file(self.stat_path)

    def wait(self, timeout: float) -> int:
        """Wait for SIPp to exit on its own; its exit code, or SippError."""
        if self.process is None or self.process.proc is None:
            raise SippError(f"SIPp {self.name!r} was never started")
        try:
            return self.process.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SippError(f"SIPp {self.name!r} still running after {timeout:g}s") from None

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop at once (SIGTERM, then SIGKILL after ``grace``). Idempotent."""
        if self.process is None:
            return None
        return self.process.stop(grace=grace)

    @property
    def counts_path(self) -> Path:
        return self._trace_path("counts.csv")

    def _trace_path(self, suffix: str) -> Path:
        """Where SIPp writes a -trace_* file: SCENARIO_PID_SUFFIX in its cwd."""
        pid = self.process.pid if self.process is not None else 0
        return self.workdir / f"{self._scenario_stem()}_{pid}_{suffix}"

    def message_counts(self) -> dict[str, int]:
        """The latest per-message counters (for example ``1_INVITE_Recv``)."""
        try:
            text = self.counts_path.read_text(errors="replace")
        except OSError:
            return {}
        return parse_counts_csv(text)

    def _scenario_stem(self) -> str:
        scenario = getattr(self, "scenario", None)
        return scenario.stem if isinstance(scenario, Path) else self.role

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else ""

    def __enter__(self) -> _SippProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SippUas(_SippProcess):
    """A SIPp UAS standing in for an Asterisk box.

    Scenario ``uas.xml`` answers OPTIONS 200 and holds calls until BYE;
    ``uas_503.xml`` answers 503 to OPTIONS and INVITE (a box draining).
    """

    role = "uas"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        transport: str = "udp",
        scenario: str | Path = "uas.xml",
        control_port: int | None = None,
        stat_interval: int = 1,
        name: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            workdir, name or "uas", host, port, transport, control_port,
            stat_interval, extra_args, env,
        )  # fmt: skip
        self.scenario = _resolve_scenario(scenario, self.workdir)

    def _role_args(self) -> list[str]:
        # -trace_counts writes per-message counters: INVITEs received is
        # the number of calls the balancer sent here (OPTIONS apart).
        return ["-sf", str(self.scenario), "-trace_counts"]

    def start(self, timeout: float = 10.0) -> SippUas:
        super().start(timeout)
        return self

    def invite_times(self) -> list[float]:
        """When each INVITE arrived (needs ``extra_args=["-trace_msg"]``)."""
        try:
            text = self._trace_path("messages.log").read_text(errors="replace")
        except OSError:
            return []
        return [
            t
            for t, direction, line in parse_message_log(text)
            if direction == "received" and line.startswith("INVITE ")
        ]

    def invites_received(self) -> int:
        """Initial INVITEs this box has received (retransmissions apart)."""
        return sum(v for k, v in self.message_counts().items() if k.endswith("_INVITE_Recv"))

    @property
    def sip_uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.port};transport={self.transport}"

    def __enter__(self) -> SippUas:
        return self


# Message indexes in the packaged uac.xml: the 200 answering the INVITE
# (step 4) and the 200 answering the BYE (step 8).
UAC_INVITE_ANSWER = "4_200"
UAC_BYE_ANSWER = "8_200"


class SippUac(_SippProcess):
    """A SIPp UAC placing calls at ``rate`` calls/s to ``target``, each held
    for ``hold_ms`` milliseconds; stops after ``max_calls`` when given.

    Its outcomes as an operator reads them (packaged ``uac.xml`` only):
    :meth:`answered`, :meth:`setup_failures` (what failover must prevent) and
    :meth:`established_then_lost` (answered, then lost with their box).
    """

    role = "uac"

    def __init__(
        self,
        workdir: Path,
        target_host: str,
        target_port: int,
        *,
        rate: float = 10.0,
        hold_ms: int = 1000,
        max_calls: int | None = None,
        max_open_calls: int | None = None,
        recv_timeout_ms: int = 10000,
        service: str = "asterfleet",
        host: str = "127.0.0.1",
        port: int | None = None,
        transport: str = "udp",
        scenario: str | Path = "uac.xml",
        control_port: int | None = None,
        stat_interval: int = 1,
        name: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            workdir, name or "uac", host, port, transport, control_port,
            stat_interval, extra_args, env,
        )  # fmt: skip
        if rate <= 0:
            raise UsageError(f"call rate must be positive, got {rate}")
        if hold_ms < 0:
            raise UsageError(f"hold time must not be negative, got {hold_ms} ms")
        if max_calls is not None and max_calls < 1:
            raise UsageError(f"max_calls must be at least 1, got {max_calls}")
        if recv_timeout_ms < 1:
            raise UsageError(f"recv_timeout_ms must be positive, got {recv_timeout_ms}")
        if not service or any(c in service for c in " \t\r\n;@<>"):
            raise UsageError(f"service {service!r} is not a valid SIP user part")
        self.target_host = target_host
        self.target_port = target_port
        self.rate = rate
        self.hold_ms = hold_ms
        self.max_calls = max_calls
        self.max_open_calls = max_open_calls
        self.recv_timeout_ms = recv_timeout_ms
        self.service = service
        self.scenario = _resolve_scenario(scenario, self.workdir)

    def _role_args(self) -> list[str]:
        target = f"[{self.target_host}]" if ":" in self.target_host else self.target_host
        args = [
            f"{target}:{self.target_port}",
            "-sf", str(self.scenario),
            "-s", self.service,
            "-r", f"{self.rate:g}", "-rp", "1000",
            "-d", str(self.hold_ms),
            "-recv_timeout", str(self.recv_timeout_ms),
            "-trace_counts",
        ]  # fmt: skip
        if self.max_calls is not None:
            args += ["-m", str(self.max_calls)]
        if self.max_open_calls is not None:
            args += ["-l", str(self.max_open_calls)]
        return args

    def start(self, timeout: float = 10.0) -> SippUac:
        super().start(timeout)
        return self

    def answered(self) -> int:
        """Calls whose INVITE was answered 200."""
        return self.message_counts().get(f"{UAC_INVITE_ANSWER}_Recv", 0)

    def setup_failures(self) -> int:
        """Calls that failed before being answered."""
        counts = self.message_counts()
        return sum(counts.get(f"{UAC_INVITE_ANSWER}_{k}", 0) for k in ("Unexp", "Timeout"))

    def established_then_lost(self) -> int:
        """Calls answered, then lost with their box (their BYE got no 200)."""
        counts = self.message_counts()
        return sum(counts.get(f"{UAC_BYE_ANSWER}_{k}", 0) for k in ("Unexp", "Timeout"))

    def stop_gracefully(self, timeout: float = 60.0) -> SippStats:
        """Place no new calls, let the calls in progress finish, and return
        the final statistics.

        Sends SIGUSR1 (SIPp's smooth exit, like pressing 'q'); SIPp exits
        once its last call ends and writes a final row. If it is still
        running after ``timeout`` it is stopped hard and SippError raised.
        """
        if self.process is None:
            raise SippError(f"SIPp {self.name!r} was never started")
        if self.alive():
            self.process.signal(signal.SIGUSR1)
            try:
                self.wait(timeout)
            except SippError:
                self.stop(grace=2.0)
                raise SippError(
                    f"SIPp {self.name!r} did not finish its calls within {timeout:g}s"
                ) from None
        return self.stats()

    def __enter__(self) -> SippUac:
        return self
