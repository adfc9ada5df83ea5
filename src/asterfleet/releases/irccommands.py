"""The commands the watcher answers in its IRC channel. Pure: a line of
text and who said it in, a request (or the reply to give) out.

- ``!status``: the last check, per branch (anyone);
- ``!check``: check the feeds now;
- ``!build BRANCH``: build the image of a tracked branch (its knot);
- ``!rollout CLUSTER VERSION``: roll a version over a cluster.

``!check``, ``!build`` and ``!rollout`` are only for nicks on the allow list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asterfleet.errors import UsageError
from asterfleet.releases.version import check_branch, version

_CLUSTER = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Check:
    pass


@dataclass(frozen=True)
class Build:
    branch: str


@dataclass(frozen=True)
class Rollout:
    cluster: str
    version: str


Request = Status | Check | Build | Rollout
USAGE = "commands: !status, !check, !build BRANCH, !rollout CLUSTER VERSION"


def interpret(
    text: str, nick: str, allowed: frozenset[str], branches: tuple[str, ...]
) -> Request | str | None:
    """What ``nick`` asked for with ``text``: a request, a reply (usage, a
    refusal), or None when the line is not a command."""
    words = text.split()
    if not words or not words[0].startswith("!"):
        return None
    name, args = words[0][1:].lower(), words[1:]
    if name == "status" and not args:
        return Status()
    if name not in ("check", "build", "rollout", "status"):
        return None  # another bot's command
    if nick.lower() not in allowed:
        return f"{nick}: !{name} is only for the nicks on the allow list"
    try:
        if name == "check" and not args:
            return Check()
        if name == "build" and len(args) == 1:
            branch = check_branch(args[0])
            if branch not in branches:
                return f"{nick}: branch {branch} is not tracked ({', '.join(branches)})"
            return Build(branch)
        if name == "rollout" and len(args) == 2:
            if not _CLUSTER.match(args[0]):
                return f"{nick}: cluster {args[0]!r} is not a cluster name"
            return Rollout(args[0], str(version(args[1])))
    except UsageError as exc:
        return f"{nick}: {exc}"
    return f"{nick}: {USAGE}"
