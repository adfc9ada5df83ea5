"""Editing the image's Containerfile: the ``ARG`` lines that name the
Asterisk release and its SHA-256.

images/asterisk/Containerfile declares ``ARG ASTERISK_VERSION=<version>``
(in each stage that uses it) and ``ARG ASTERISK_SHA256`` (the digest the
build checks the tarball against). Every declaration of each gets the new
value; the rest of the file is left byte for byte.
"""

from __future__ import annotations

import re

from asterfleet.errors import UsageError

VERSION_ARG = "ASTERISK_VERSION"
SHA256_ARG = "ASTERISK_SHA256"


def _arg(name: str) -> re.Pattern[str]:
    return re.compile(rf"^(?P<head>[ \t]*ARG[ \t]+{name})(?:=(?P<value>[^\s#]*))?[ \t]*$", re.M)


def read_arg(text: str, name: str) -> str | None:
    """The default value of the first ``ARG name=...``, None if it has none."""
    m = _arg(name).search(text)
    return m["value"] if m and m["value"] else None


def set_args(text: str, values: dict[str, str], source: str = "Containerfile") -> str:
    """``text`` with every ``ARG NAME`` of ``values`` set to its value."""
    for name, value in values.items():
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", value):
            raise UsageError(f"{name} value {value!r} cannot go into a Containerfile ARG")

        def put(m: re.Match[str], v: str = value) -> str:
            return f"{m['head']}={v}"

        text, count = _arg(name).subn(put, text)
        if count == 0:
            raise UsageError(f"{source} has no 'ARG {name}' line; add one so it can be updated")
    return text
