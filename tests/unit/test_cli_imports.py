"""Each `asterfleet` command imports only what it uses.

The start-up time itself is measured by bench/cli_startup.py, never here;
these tests check the cause: which modules a command loads. Each runs the
real entry point in a fresh interpreter and lists ``sys.modules`` after it.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from asterfleet.cli.main import AREAS

# What the console, the image factory and the registry need, and the agents don't.
PRODUCT_HEAVY = (
    "asterfleet.console",
    "asterfleet.registry",
    "asterfleet.factory",
    "asterfleet.db",
    "asterfleet.auth",
    "asterfleet.capture",
    "asterfleet.lab",
    "asterfleet.testing",
    "alembic",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
)

PROBE = """
import json, sys
sys.argv = ["asterfleet", *json.loads(sys.argv[1])]
from asterfleet.cli.main import main
try:
    main()
except SystemExit:
    pass
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def run_probe(*args: str) -> tuple[set[str], str]:
    """The modules a command loaded, and what it printed on stdout."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = done.stderr.rsplit("\nMODULES ", 1)[-1]
    return set(json.loads(line)), done.stdout


def modules_loaded_by(*args: str) -> set[str]:
    return run_probe(*args)[0]


def loaded(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize(
    ("args", "also_absent"),
    [
        # No area at all: not even the etcd client or Rich.
        (("--version",), ("asterfleet.cli.fleet", "asterfleet.etcd_client", "aetcd", "rich")),
        # The list of areas comes from one table: no area's module is imported.
        (("--help",), tuple(sorted({a.module for a in AREAS}))),
        (("fleet", "ls", "--help"), ("asterfleet.node", "asterfleet.balancer", "structlog")),
        (("node", "run", "--help"), ("asterfleet.balancer", "asterfleet.kamailio", "httpx")),
        (("balancer", "run", "--help"), ("asterfleet.node", "asterfleet.sipp")),
        (("releases", "check", "--help"), ("asterfleet.releases", "httpx")),
    ],
    ids=["--version", "--help", "fleet ls", "node run", "balancer run", "releases check"],
)
def test_a_command_imports_only_its_area(
    args: tuple[str, ...], also_absent: tuple[str, ...]
) -> None:
    modules = modules_loaded_by(*args)
    assert "asterfleet.cli.main" in modules  # the probe ran the real entry point
    assert not loaded(modules, PRODUCT_HEAVY + also_absent)


def test_help_lists_every_area_with_its_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asterfleet", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    for area in AREAS:
        # "│ node      The node agent, run beside each Asterisk box.   │"
        line = next((x for x in done.stdout.splitlines() if f"│ {area.name}  " in x), "")
        assert area.help.replace("`", "")[:60] in line, f"{area.name}: {line!r}"


@pytest.mark.parametrize("area", AREAS, ids=lambda a: a.name)
def test_the_table_line_is_where_the_area_help_starts(area: object) -> None:
    from asterfleet.cli.main import Area

    assert isinstance(area, Area)
    target = getattr(importlib.import_module(area.module), area.attribute)
    text = target.info.help if isinstance(target, typer.Typer) else target.__doc__
    assert isinstance(text, str), f"{area.name} has no help"
    first = " ".join(text.strip().split("\n\n")[0].split())
    assert first == area.help, f"{area.module}: its help starts {first!r}"


def test_lab_status_reads_files_without_starting_a_stack(tmp_path: Path) -> None:
    modules = modules_loaded_by("lab", "status", "--json", "--dir", str(tmp_path))
    assert "asterfleet.lab.state" in modules
    heavy = ("asterfleet.lab.runner", "asterfleet.lab.stack", "asterfleet.console", "aetcd")
    assert not loaded(modules, heavy)


def test_capture_search_by_call_id_reads_through_the_driver_alone(tmp_path: Path) -> None:
    """The whole `capture search --call-id` command answers without
    SQLAlchemy (its import is most of a start-up): the store opens read-only
    on the driver's connection and the call is read in plain SQL."""
    from asterfleet.capture.store import Store
    from tests.unit.test_capture_pager import answered

    db = tmp_path / "capture.db"
    store = Store(str(db))
    store.insert_rows(answered("c-cli@x", 1.0, 3.0) + answered("c-other@x", 2.0, 1.0))
    store.close()
    modules, out = run_probe("capture", "search", "--db", str(db), "--call-id", "c-cli@x", "--json")
    (call,) = json.loads(out)
    assert (call["call_id"], call["final_status"], call["messages"]) == ("c-cli@x", 200, 7)
    assert "asterfleet.capture.store" in modules
    assert not loaded(modules, ("sqlalchemy", "asterfleet.capture.tables", "asterfleet.storage"))


def test_a_one_shot_command_runs_without_cycle_collection_and_restores_it() -> None:
    import gc

    from asterfleet.cli.capture import one_shot

    seen: list[bool] = []

    @one_shot
    def command(fail: bool) -> str:
        seen.append(gc.isenabled())
        if fail:
            raise ValueError("bad input")
        return "done"

    assert gc.isenabled()
    assert command(False) == "done"
    with pytest.raises(ValueError, match="bad input"):
        command(True)
    assert seen == [False, False]
    assert gc.isenabled()  # in-process runs (tests) get it back
