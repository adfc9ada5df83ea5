"""`asterfleet lab`: the whole cluster with traffic on one machine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import typer

from asterfleet.cli.common import console, emit, fail, user_errors
from asterfleet.lab.state import (
    default_lab_dir,
    pid_alive,
    read_info,
    running_info,
    write_desired,
)
from asterfleet.lab.view import banner, one_line, render

app = typer.Typer(
    help="Run the whole cluster on this machine: etcd, Kamailio, nodes with their agents, console, calls.",
    no_args_is_help=True,
)

DirOpt = typer.Option(
    None,
    "--dir",
    envvar="ASTERFLEET_LAB_DIR",
    help="Lab directory [default: ~/.local/state/asterfleet/lab].",
)


@app.command("up")
def up(
    nodes: int = typer.Option(
        3,
        "--nodes",
        min=0,
        max=50,
        help="Nodes: SIPp standing in for Asterisk, each with its node agent.",
    ),
    calls_per_second: float = typer.Option(
        5.0, "--calls-per-second", min=0, help="Call load through the balancer (0 = none)."
    ),
    hold: float = typer.Option(2.0, "--hold", min=0, help="Seconds each call lasts."),
    console_port: int = typer.Option(
        None,
        "--console-port",
        min=1,
        max=65535,
        help="Port of the web console [default: a free one].",
    ),
    no_console: bool = typer.Option(False, "--no-console", help="Do not start the web console."),
    no_capture: bool = typer.Option(
        False, "--no-capture", help="Do not start the HEP capture server."
    ),
    no_factory: bool = typer.Option(
        False,
        "--no-factory",
        help="Do not start the registry and the factory worker (with its sample knot).",
    ),
    duration: float = typer.Option(
        0,
        "--duration",
        min=0,
        help="Stop by itself after this many seconds (0 = until Ctrl-C or 'lab down').",
    ),
    lab_dir: Path = DirOpt,
) -> None:
    """Start the lab and show it live; Ctrl-C (or `asterfleet lab down`) stops it all.

    Everything runs on loopback as the current user, on free ports, with its
    files in the lab directory. Change the number of nodes while it runs
    with `asterfleet lab scale N`: removed nodes drain first, so no call
    is dropped.
    """
    lab_dir = lab_dir or default_lab_dir()
    existing = read_info(lab_dir)
    if existing is not None and pid_alive(existing.pid):
        fail(
            f"a lab is already running in {lab_dir} (pid {existing.pid}): 'asterfleet lab down' first, or use --dir"
        )
    # The whole stack, only for `lab up`: status, scale and down read files.
    from rich.live import Live

    from asterfleet import logs
    from asterfleet.lab.runner import Lab, LabOptions

    logs.configure("warning")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    lab = Lab(
        LabOptions(
            lab_dir=lab_dir,
            nodes=nodes,
            calls_per_second=calls_per_second,
            hold_ms=int(hold * 1000),
            console=not no_console,
            capture=not no_capture,
            factory=not no_factory,
            console_port=console_port,
        )
    )
    try:
        with user_errors():
            console.print(f"starting the lab in {lab_dir} ...")
            info = lab.start()
        password = None
        if info.console_password_file:
            password = Path(info.console_password_file).read_text().strip()
        console.print(banner(json.loads(info.to_json()), password), highlight=False)
        sys.stdout.flush()
        deadline = time.monotonic() + duration if duration else None
        live = (
            Live(console=console, refresh_per_second=2, auto_refresh=False)
            if console.is_terminal
            else None
        )
        last_line = 0.0
        if live is not None:
            live.start()
        try:
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                lab.reconcile_scale()
                snap = lab.snapshot()
                lab.write_status(snap)
                if live is not None:
                    live.update(render(snap), refresh=True)
                elif time.monotonic() - last_line >= 5:
                    print(one_line(snap), flush=True)
                    last_line = time.monotonic()
                stop.wait(1.0)
        finally:
            if live is not None:
                live.stop()
    finally:
        console.print("stopping the lab: letting calls finish ...")
        final = lab.stop()
        console.print(f"lab stopped. calls: {final}", highlight=False)


@app.command("down")
def down(
    lab_dir: Path = DirOpt, timeout: float = typer.Option(90, help="Longest wait for a clean stop.")
) -> None:
    """Stop a running lab (calls finish first) and check nothing is left behind."""
    lab_dir = lab_dir or default_lab_dir()
    with user_errors():
        info = running_info(lab_dir)
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(info.pid):
        time.sleep(0.2)
    left = {name: pid for name, pid in info.pids.items() if pid_alive(pid)}
    for pid in left.values():
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    if pid_alive(info.pid):
        fail(f"the lab (pid {info.pid}) did not stop within {timeout:.0f}s", 1)
    if left:
        console.print(f"[yellow]killed leftover processes:[/] {', '.join(left)}")
    console.print("lab is down")


@app.command("status")
def status(
    lab_dir: Path = DirOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """What the running lab shows: nodes, balancers, calls."""
    lab_dir = lab_dir or default_lab_dir()
    with user_errors():
        running_info(lab_dir)
    try:
        snap = json.loads((lab_dir / "status.json").read_text())
    except (OSError, ValueError):
        fail(f"the lab in {lab_dir} has not written its status yet: try again in a second", 1)
    emit(as_json, snap, lambda: console.print(render(snap)))


@app.command("scale")
def scale(
    nodes: int = typer.Argument(..., metavar="N", help="How many nodes the lab should run."),
    lab_dir: Path = DirOpt,
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Wait until the lab has that many nodes registered."
    ),
    timeout: float = typer.Option(120, help="With --wait: longest wait in seconds."),
) -> None:
    """Add or remove nodes live; removed ones drain first (no call dropped)."""
    lab_dir = lab_dir or default_lab_dir()
    with user_errors():
        running_info(lab_dir)
        write_desired(lab_dir, nodes)
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            snap = json.loads((lab_dir / "status.json").read_text())
        except (OSError, ValueError):
            snap = {}
        active = [n for n in snap.get("nodes", []) if n["state"] == "active"]
        if (
            len(snap.get("nodes", [])) == nodes
            and len(active) == nodes
            and not snap.get("draining")
        ):
            console.print(f"lab has {nodes} active node(s): {', '.join(n['id'] for n in active)}")
            return
        time.sleep(0.5)
    fail(
        f"the lab did not reach {nodes} active nodes within {timeout:.0f}s: see 'asterfleet lab status'",
        1,
    )
