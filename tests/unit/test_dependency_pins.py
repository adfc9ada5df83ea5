"""Every runtime pin in pyproject.toml earns its place: asterfleet imports it,
or another pinned package needs it (then the pin only fixes its version)."""

from __future__ import annotations

import ast
import re
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_NAME = re.compile(r"^[A-Za-z0-9._-]+")
# Loaded by another package at run time, never imported by name.
LOADED_BY_OTHERS = {
    "uvloop": "uvicorn's event loop (loop='auto')",
    "httptools": "uvicorn's HTTP parser (http='auto')",
    "python-multipart": "FastAPI's form parsing (the console's forms)",
    "psycopg": "SQLAlchemy's postgresql+psycopg driver",
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = []
    for spec in project["dependencies"]:
        assert "==" in spec, f"{spec}: runtime dependencies are pinned exactly"
        match = _NAME.match(spec)
        assert match is not None, spec
        names.append(_canonical(match.group()))
    return names


def _imported_distributions() -> set[str]:
    modules: set[str] = set()
    for path in (REPO / "src/asterfleet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module.split(".")[0])
    by_module = metadata.packages_distributions()
    return {_canonical(dist) for module in modules for dist in by_module.get(module, ())}


def _required_by(pins: list[str]) -> dict[str, set[str]]:
    """Which pinned packages need each package (extras left out)."""
    needed: dict[str, set[str]] = {}
    for pin in pins:
        for requirement in metadata.requires(pin) or ():
            if "extra ==" in requirement:
                continue
            match = _NAME.match(requirement)
            assert match is not None, requirement
            needed.setdefault(_canonical(match.group()), set()).add(pin)
    return needed


def test_every_runtime_pin_is_imported_or_needed_by_another_pin() -> None:
    pins = _pins()
    imported = _imported_distributions()
    needed = _required_by(pins)
    unused = [
        pin
        for pin in pins
        if pin not in imported and pin not in needed and pin not in LOADED_BY_OTHERS
    ]
    assert not unused, f"pinned but neither imported by asterfleet nor needed: {unused}"
    assert set(LOADED_BY_OTHERS) <= set(pins)


def test_click_is_pinned_for_uvicorn_not_for_typer() -> None:
    """Typer 0.28 carries its own copy (typer._click) and asterfleet imports
    none; uvicorn's command line needs click (the comment in pyproject.toml)."""
    assert "click" not in _imported_distributions()
    needed = _required_by(_pins())
    assert "uvicorn" in needed["click"]
    assert "typer" not in needed["click"]
