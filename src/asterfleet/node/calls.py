"""Where the node agent learns how many calls its box is carrying.

A :class:`CallCounter` answers ``await active_calls()`` with a number, or None
when the count is unknown; :attr:`~CallCounter.last_error` then says why
(shown in the node record as ``calls_error``). :meth:`~CallCounter.run`
keeps any connection it needs; counters never raise for runtime trouble.

* :class:`NoCounter` - no source.
* :class:`SippStatCounter` - a SIPp UAS statistics CSV (the lab's boxes).
* :class:`AmiCounter` - Asterisk's Manager Interface, one persistent session
  counting from channel events (:class:`~asterfleet.node.ami.AmiSession`).

:func:`counter_from_spec` builds one from ``none``, ``sipp-stat:/path.csv``
or ``ami://user@host[:port]`` (secret from ``ASTERFLEET_AMI_SECRET`` or the
file named by ``ASTERFLEET_AMI_SECRET_FILE``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from asterfleet.errors import UsageError
from asterfleet.fleet.model import NO_CALL_COUNTER
from asterfleet.node.ami import AMI_DEFAULT_PORT, AmiSession
from asterfleet.sipp.stats import SippError, read_stat_file

AMI_SECRET_ENV = "ASTERFLEET_AMI_SECRET"
AMI_SECRET_FILE_ENV = "ASTERFLEET_AMI_SECRET_FILE"


@runtime_checkable
class CallCounter(Protocol):
    """A source of the box's active-call count."""

    @property
    def last_error(self) -> str | None:
        """Why the count is unknown (None while it is known)."""
        ...

    @property
    def version(self) -> str | None:
        """The Asterisk version the source reports, when it knows it."""
        ...

    async def active_calls(self) -> int | None:
        """The number of active calls now, or None when unknown."""
        ...

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep the source's connection until ``stopping`` is set."""
        ...


class NoCounter:
    """No call-count source: always unknown."""

    last_error: str | None = NO_CALL_COUNTER
    version: str | None = None

    async def active_calls(self) -> int | None:
        return None

    async def run(self, stopping: asyncio.Event) -> None:
        return None

    def __repr__(self) -> str:
        return "NoCounter()"


class SippStatCounter:
    """Current calls from a SIPp ``-trace_stat`` CSV (``CurrentCall``).

    Unknown (None) while the file is missing or has no complete row, and -
    when ``stale_after`` is set - when the file has not been written for
    that many seconds (SIPp died, so its last row no longer tells the truth).
    """

    version: str | None = None

    def __init__(self, path: Path | str, stale_after: float | None = None) -> None:
        self.path = Path(path)
        self.stale_after = stale_after
        self.last_error: str | None = None

    def _read(self) -> int | None:
        try:
            if self.stale_after is not None:
                age = time.time() - self.path.stat().st_mtime
                if age > self.stale_after:
                    self.last_error = f"{self.path} not written for {age:.0f}s"
                    return None
            count = read_stat_file(self.path).current_calls
        except (OSError, SippError) as exc:
            self.last_error = str(exc)
            return None
        self.last_error = None
        return count

    async def active_calls(self) -> int | None:
        return await asyncio.to_thread(self._read)

    async def run(self, stopping: asyncio.Event) -> None:
        return None

    def __repr__(self) -> str:
        return f"SippStatCounter({str(self.path)!r})"


class AmiCounter:
    """Active calls from Asterisk's AMI over one persistent session."""

    def __init__(self, session: AmiSession) -> None:
        self.session = session

    @property
    def last_error(self) -> str | None:
        return self.session.error

    @property
    def version(self) -> str | None:
        return self.session.version

    async def active_calls(self) -> int | None:
        return self.session.calls

    async def run(self, stopping: asyncio.Event) -> None:
        await self.session.run(stopping)

    def __repr__(self) -> str:
        return f"AmiCounter({self.session!r})"


# --------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------

SPEC_HELP = "none, sipp-stat:/path/to/stats.csv or ami://user@host[:port]"


def counter_from_spec(spec: str, env: Mapping[str, str] | None = None) -> CallCounter:
    """Build a counter from a command-line spec (see :data:`SPEC_HELP`).

    The AMI secret comes from ``ASTERFLEET_AMI_SECRET`` or from the file
    named by ``ASTERFLEET_AMI_SECRET_FILE`` (``env`` defaults to
    ``os.environ``); a secret written in the spec is refused so it never
    appears on a command line.
    """
    environ = os.environ if env is None else env
    text = spec.strip()
    if text.lower() == "none":
        return NoCounter()
    if text.lower().startswith("sipp-stat:"):
        path = text[len("sipp-stat:") :]
        if not path:
            raise UsageError(
                f"call counter spec {spec!r} has no file path: use sipp-stat:/path.csv"
            )
        return SippStatCounter(Path(path))
    if text.lower().startswith("ami://"):
        return AmiCounter(_ami_from_spec(spec, text, environ))
    raise UsageError(f"unknown call counter spec {spec!r}: use {SPEC_HELP}")


def ami_secret(environ: Mapping[str, str]) -> str:
    """The AMI secret from the environment or a file (UsageError if neither)."""
    secret = environ.get(AMI_SECRET_ENV)
    if secret:
        return secret
    path = environ.get(AMI_SECRET_FILE_ENV)
    if path:
        try:
            secret = Path(path).read_text().strip()
        except OSError as exc:
            raise UsageError(
                f"{AMI_SECRET_FILE_ENV}={path}: cannot read it ({exc.strerror or exc})"
            ) from None
        if secret:
            return secret
        raise UsageError(f"{AMI_SECRET_FILE_ENV}={path}: the file is empty")
    raise UsageError(
        f"AMI call counter needs the secret in {AMI_SECRET_ENV} or a file named by "
        f"{AMI_SECRET_FILE_ENV}"
    )


def _ami_from_spec(spec: str, text: str, environ: Mapping[str, str]) -> AmiSession:
    def bad(why: str) -> UsageError:
        return UsageError(f"bad AMI call counter spec {spec!r}: {why} (use ami://user@host[:port])")

    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc)) from None
    if parts.password is not None:
        raise UsageError(
            f"AMI call counter spec must not contain a secret; set {AMI_SECRET_ENV} instead"
        )
    if not parts.username:
        raise bad("no user name")
    if not parts.hostname:
        raise bad("no host")
    if parts.path not in ("", "/") or parts.fragment or parts.query:
        raise bad("unexpected path, query or fragment")
    return AmiSession(
        parts.hostname, port or AMI_DEFAULT_PORT, unquote(parts.username), ami_secret(environ)
    )
