"""Asterisk version numbers: parsing, ordering and the tracked branch.

Shapes the project publishes:

- ``22.1.0``, ``20.10.2`` (a standard release: major.minor.patch),
- ``22.1.0-rc1``, ``22.0.0-pre1`` (release candidates and pre-releases),
- ``certified-20.7-cert1`` (certified Asterisk: no patch, a ``-cert`` level;
  older tags spell it ``certified/18.9-cert5``), with ``-rc1`` candidates too.

A tracked branch is ``22`` (every 22.x.y) or ``certified-20.7``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asterfleet.errors import UsageError

_VERSION = re.compile(
    r"^(?P<certified>certified[-/])?"
    r"(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?"
    r"(?:-cert(?P<cert>\d+))?"
    r"(?:-(?P<pre>rc|pre)(?P<pre_n>\d+))?$"
)
_BRANCH = re.compile(r"^(?:(?P<major>\d+)|certified-(?P<cmajor>\d+)\.(?P<cminor>\d+))$")

# pre-releases before release candidates before the release itself
_STAGE = {"pre": 0, "rc": 1, None: 2}


@dataclass(frozen=True, order=False)
class AsteriskVersion:
    major: int
    minor: int
    patch: int | None  # None for certified releases
    cert: int | None  # the -certN level, certified releases only
    pre: str | None  # "rc" or "pre", None for a release
    pre_n: int = 0

    @property
    def certified(self) -> bool:
        return self.cert is not None

    @property
    def prerelease(self) -> bool:
        return self.pre is not None

    @property
    def branch(self) -> str:
        """The branch it belongs to: ``22`` or ``certified-20.7``."""
        if self.certified:
            return f"certified-{self.major}.{self.minor}"
        return str(self.major)

    def key(self) -> tuple[int, int, int, int, int, int]:
        return (
            self.major,
            self.minor,
            self.patch or 0,
            self.cert or 0,
            _STAGE[self.pre],
            self.pre_n,
        )

    def __lt__(self, other: AsteriskVersion) -> bool:
        return self.key() < other.key()

    def __le__(self, other: AsteriskVersion) -> bool:
        return self.key() <= other.key()

    def __gt__(self, other: AsteriskVersion) -> bool:
        return self.key() > other.key()

    def __ge__(self, other: AsteriskVersion) -> bool:
        return self.key() >= other.key()

    def __str__(self) -> str:
        if self.certified:
            text = f"certified-{self.major}.{self.minor}-cert{self.cert}"
        else:
            text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += f"-{self.pre}{self.pre_n}"
        return text

    @property
    def tarball(self) -> str:
        """The release's file name: ``asterisk-22.1.0.tar.gz``."""
        return f"asterisk-{self}.tar.gz"


def parse_version(text: str) -> AsteriskVersion | None:
    """The version ``text`` names, or None when it is not an Asterisk version."""
    m = _VERSION.match(text.strip())
    if m is None:
        return None
    certified = m["certified"] is not None
    if certified != (m["cert"] is not None):
        return None  # "certified-20.7" without -certN, or "20.7-cert1" without the prefix
    if not certified and m["patch"] is None:
        return None  # a standard release always has a patch level
    if certified and m["patch"] is not None:
        return None
    return AsteriskVersion(
        major=int(m["major"]),
        minor=int(m["minor"]),
        patch=None if m["patch"] is None else int(m["patch"]),
        cert=None if m["cert"] is None else int(m["cert"]),
        pre=m["pre"],
        pre_n=int(m["pre_n"] or 0),
    )


def version(text: str, what: str = "version") -> AsteriskVersion:
    """Like :func:`parse_version`, a UsageError naming ``what`` on bad input."""
    parsed = parse_version(text)
    if parsed is None:
        raise UsageError(
            f"{what} {text!r} is not an Asterisk version "
            "(for example 22.1.0, 22.1.0-rc1 or certified-20.7-cert1)"
        )
    return parsed


def check_branch(text: str, what: str = "branch") -> str:
    """A tracked branch name, checked: ``22`` or ``certified-20.7``."""
    if _BRANCH.match(text) is None:
        raise UsageError(
            f"{what} {text!r} is not an Asterisk branch (for example 22 or certified-20.7)"
        )
    return text


def newest(
    versions: list[AsteriskVersion], branch: str, *, prereleases: bool = False
) -> AsteriskVersion | None:
    """The newest version of ``branch`` among ``versions`` (release
    candidates only when ``prereleases``)."""
    candidates = [v for v in versions if v.branch == branch and (prereleases or not v.prerelease)]
    return max(candidates, key=AsteriskVersion.key, default=None)
