"""Carrying out what was asked in the channel: a check, a build, a rollout.

A build is queued through the factory (``asterfleet knot build KNOT --json``
by default) and answered with the link to its log in the console; a rollout
is started with ``asterfleet rollout start``. Commands are argv templates
(``{knot}``, ``{branch}``, ``{cluster}``, ``{version}``, ``{nick}`` filled in
per word),
never run through a shell.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence

from asterfleet.releases.config import Irc
from asterfleet.releases.irccommands import Build, Check, Request, Rollout, Status

TIMEOUT = 120.0


def _run(template: Sequence[str], values: dict[str, str]) -> tuple[bool, str]:
    argv = [word.format(**values) for word in template]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        return False, f"{argv[0]} is not installed"
    except subprocess.TimeoutExpired:
        return False, f"{argv[0]} gave no answer in {TIMEOUT:.0f} s"
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        return False, last
    return True, done.stdout.strip()


def build_reply(irc: Irc, branch: str) -> str:
    knot = irc.knots.get(branch)
    if knot is None:
        return f"no knot builds branch {branch}: add it to [irc] knots"
    ok, out = _run(irc.build_command, {"knot": knot, "branch": branch})
    if not ok:
        return f"build of {knot} refused: {out}"
    try:
        number = int(json.loads(out)["build"])
    except (ValueError, KeyError, TypeError):
        return f"build of {knot} queued"
    link = f"{irc.console_url.rstrip('/')}/knots/{knot}/builds/{number}"
    return f"build {knot}#{number} queued: {link}" if irc.console_url else f"{knot}#{number} queued"


def rollout_reply(irc: Irc, cluster: str, version: str, nick: str) -> str:
    values = {"cluster": cluster, "version": version, "nick": nick}
    ok, out = _run(irc.rollout_command, values)
    if not ok:
        return f"rollout of {version} on {cluster} refused: {out}"
    return f"rollout of {version} on {cluster} started: {out.splitlines()[-1] if out else 'ok'}"


def carry_out(
    irc: Irc, request: Request, nick: str, status: Callable[[], str], check: Callable[[], str]
) -> str:
    """The reply to ``request``, once it has been carried out."""
    if isinstance(request, Status):
        return status()
    if isinstance(request, Check):
        return f"{nick}: {check()}"
    if isinstance(request, Build):
        return f"{nick}: {build_reply(irc, request.branch)}"
    if isinstance(request, Rollout):
        return f"{nick}: {rollout_reply(irc, request.cluster, request.version, nick)}"
    raise AssertionError(request)
