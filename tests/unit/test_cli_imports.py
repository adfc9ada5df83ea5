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


def modules_loaded_by(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = done.stderr.rsplit("\nMODULES ", 1)[-1]
    return set(json.loads(line))


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
    ],
    ids=["--version", "--help", "fleet ls", "node run", "balancer run"],
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
