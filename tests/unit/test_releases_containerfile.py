"""Setting ASTERISK_VERSION and ASTERISK_SHA256 in a Containerfile."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.errors import UsageError
from asterfleet.releases.containerfile import SHA256_ARG, VERSION_ARG, read_arg, set_args

REPO = Path(__file__).parent.parent.parent
DIGEST = "0f" * 32

BEFORE = """FROM base AS build
ARG ASTERISK_VERSION=22.4.0
ARG ASTERISK_SHA256
ARG ASTERISK_TARBALL=
RUN echo "$ASTERISK_VERSION"   # ASTERISK_VERSION=not this one
FROM base
  ARG ASTERISK_VERSION=22.4.0
LABEL version="$ASTERISK_VERSION"
"""
AFTER = f"""FROM base AS build
ARG ASTERISK_VERSION=22.10.0
ARG ASTERISK_SHA256={DIGEST}
ARG ASTERISK_TARBALL=
RUN echo "$ASTERISK_VERSION"   # ASTERISK_VERSION=not this one
FROM base
  ARG ASTERISK_VERSION=22.10.0
LABEL version="$ASTERISK_VERSION"
"""


def test_every_declaration_gets_the_new_value() -> None:
    assert read_arg(BEFORE, VERSION_ARG) == "22.4.0"
    assert read_arg(BEFORE, SHA256_ARG) is None
    after = set_args(BEFORE, {VERSION_ARG: "22.10.0", SHA256_ARG: DIGEST})
    assert after == AFTER
    assert set_args(after, {VERSION_ARG: "22.10.0", SHA256_ARG: DIGEST}) == AFTER  # idempotent


def test_the_project_containerfile_is_editable() -> None:
    text = (REPO / "images" / "asterisk" / "Containerfile").read_text()
    after = set_args(text, {VERSION_ARG: "22.99.0", SHA256_ARG: DIGEST})
    assert read_arg(after, VERSION_ARG) == "22.99.0"
    assert read_arg(after, SHA256_ARG) == DIGEST
    changed = [(a, b) for a, b in zip(text.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed and all(b.lstrip().startswith("ARG ASTERISK_") for _, b in changed)


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        ("FROM x\n", {VERSION_ARG: "22.1.0"}, "has no 'ARG ASTERISK_VERSION' line"),
        (BEFORE, {VERSION_ARG: "22.1.0; rm -rf /"}, "cannot go into a Containerfile ARG"),
    ],
)
def test_bad_edits(text: str, values: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        set_args(text, values)
