"""Boxes that carry a version, swapped when a rollout's replace action asks:
the lab's stand-in for podman replacing a container.

Each box is a SIPp UAS whose answers carry ``X-Asterfleet-Version`` and whose
node agent announces the version. The rollout controller's replace action
(:attr:`BoxSwapper.replace_action`) writes a request file; the swapper, in
the process that owns the stack, retires the old box the way a container
stop does (SIGTERM: the agent drains and leaves) and starts a new one at the
requested version on a new port. A version in ``broken`` answers every
INVITE with 500 while answering probes, so it fails a rollout's gate.
"""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass, field
from importlib import resources

from asterfleet.lab.stack import LabNode, Stack, agent_argv
from asterfleet.runtime.process import ManagedProcess, wait_for

VERSION_HEADER = "X-Asterfleet-Version"


def versioned_scenario(version: str, broken: bool = False) -> str:
    """The packaged UAS scenario, every answer carrying the box's version."""
    text = (
        resources.files("asterfleet.sipp")
        .joinpath("scenarios", "uas.xml")
        .read_text(encoding="iso-8859-1")
    )
    server = "      Server: asterfleet-sipp-uas\n"
    text = text.replace(server, server + f"      {VERSION_HEADER}: {version}\n")
    if broken:
        answer = "      SIP/2.0 200 OK\n      [last_Via:]\n      [last_Record-Route:]\n"
        assert answer in text, "uas.xml changed: the INVITE's 200 is not where it was"
        text = text.replace(answer, answer.replace("200 OK", "500 Server Error"), 1)
        # The call ends with the ACK of the 500 (no BYE will come).
        ack = '<recv request="ACK" rtd="true" crlf="true"/>'
        assert ack in text, "uas.xml changed: the ACK of the INVITE is not where it was"
        text = text.replace(ack, ack.replace("/>", ' next="end"/>'), 1)
    return text


@dataclass
class Swap:
    node_id: str
    version: str
    retire_seconds: float  # the old box's own drain and stop
    start_seconds: float = 0.0  # the new box until it is active in etcd-less terms (started)


@dataclass
class BoxSwapper:
    stack: Stack
    broken: frozenset[str] = frozenset()
    uas_args: tuple[str, ...] = ("-trace_msg",)
    retired: dict[str, list[LabNode]] = field(default_factory=dict)
    swaps: list[Swap] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.requests = self.stack.work_dir / "replace-requests"
        self.requests.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def replace_action(self) -> str:
        """The controller's ``--replace``: ask this swapper for ``{node}`` at ``{version}``."""
        d = self.requests  # a path without quotes or spaces (the stack's work dir)
        write = f"echo {{version}} > {d}/{{node}}.tmp && mv {d}/{{node}}.tmp {d}/{{node}}.want"
        return f"command:sh -c {shlex.quote(write)}"

    def add(self, node_id: str, version: str, uas_args: tuple[str, ...] | None = None) -> LabNode:
        scenario = self.stack.work_dir / "scenarios" / f"uas-{version}.xml"
        scenario.parent.mkdir(parents=True, exist_ok=True)
        scenario.write_text(versioned_scenario(version, version in self.broken), "iso-8859-1")
        return self.stack.add_node(
            node_id,
            scenario=scenario,
            extra=("--version", version),
            uas_args=self.uas_args if uas_args is None else uas_args,
        )

    def _swap(self, node_id: str, version: str) -> None:
        t0 = time.monotonic()
        # The old box keeps its place in the stack until the new one takes
        # it, so nothing counting the stack's boxes sees one missing.
        old = self.stack.nodes.get(node_id)
        if old is not None:
            Stack.retire(old, timeout=60)
            self.retired.setdefault(node_id, []).append(old)
        t1 = time.monotonic()
        self.add(node_id, version)
        self.swaps.append(Swap(node_id, version, t1 - t0, time.monotonic() - t1))

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            for req in sorted(self.requests.glob("*.want")):
                version = req.read_text().strip()
                req.unlink()
                try:
                    self._swap(req.name.removesuffix(".want"), version)
                except Exception as exc:  # reported to the test, never lost
                    self.errors.append(f"{req.name}: {exc}")

    def start(self) -> BoxSwapper:
        self._thread = threading.Thread(target=self._loop, name="box-swapper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=90)


class DrainWatcher:
    """When Kamailio first listed each destination as disabled (flags D…)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.disabled_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="drain-watcher", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            try:
                dests = self.stack.dispatcher()
            except Exception:
                continue
            now = time.time()
            for d in dests:
                if d.flags.startswith("D"):
                    self.disabled_at.setdefault(d.uri, now)

    def start(self) -> DrainWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def start_controller(
    stack: Stack, replace: str, extra: tuple[str, ...] = (), name: str = "rollout"
) -> ManagedProcess:
    """``asterfleet rollout run`` for the stack's cluster, gating through its Kamailio."""
    proc = ManagedProcess(
        name,
        agent_argv(
            "rollout", "run",
            "--etcd", stack.etcd_endpoint,
            "--cluster", stack.options.cluster,
            "--replace", replace,
            "--gate-via", f"127.0.0.1:{stack.sip_port}",
            "--interval", "0.2",
            "--log-level", stack.options.log_level,
            *stack.etcd_args("operator"),
            *extra,
        ),
        stack.work_dir / f"{name}.log",
    ).start()  # fmt: skip
    wait_for(lambda: "controller_started" in proc.log_tail(), 60, what="controller started")
    return proc
