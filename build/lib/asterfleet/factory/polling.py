"""Polling triggers: ``git ls-remote`` and an HTTP URL (ETag, Last-Modified
and content hash kept in the database so a restart forgets nothing)."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from dataclasses import dataclass, field

import httpx
import structlog
from sqlalchemy import Engine, insert, select, update

from asterfleet.factory.db import as_utc, utcnow
from asterfleet.factory.knot import Knot, wants_ref
from asterfleet.factory.schema import factory_poll_state

log = structlog.get_logger("asterfleet.factory.polling")


def parse_ls_remote(text: str) -> dict[str, str]:
    """ref -> sha from ``git ls-remote`` output; peeled tags (``^{}``) give
    the commit the annotated tag points to."""
    refs: dict[str, str] = {}
    peeled: dict[str, str] = {}
    for line in text.splitlines():
        sha, sep, ref = line.strip().partition("\t")
        if not sep or len(sha) not in (40, 64) or not ref.startswith("refs/"):
            continue
        if ref.endswith("^{}"):
            peeled[ref[:-3]] = sha
        else:
            refs[ref] = sha
    refs.update({r: s for r, s in peeled.items() if r in refs})
    return refs


def changed_refs(old: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    return {ref: sha for ref, sha in new.items() if old.get(ref) != sha}


def is_due(last: dt.datetime | None, interval: float, now: dt.datetime) -> bool:
    return last is None or (now - last).total_seconds() >= interval


@dataclass
class PollState:
    etag: str | None = None
    last_modified: str | None = None
    content_hash: str | None = None
    refs: dict[str, str] = field(default_factory=dict)
    checked_at: dt.datetime | None = None
    known: bool = False


def load_state(engine: Engine, knot: str, source: str) -> PollState:
    with engine.connect() as conn:
        row = conn.execute(
            select(factory_poll_state).where(
                factory_poll_state.c.knot == knot, factory_poll_state.c.source == source
            )
        ).first()
    if row is None:
        return PollState()
    return PollState(
        row.etag, row.last_modified, row.content_hash, dict(row.refs), as_utc(row.checked_at), True
    )


def save_state(engine: Engine, knot: str, source: str, state: PollState) -> None:
    values = {
        "etag": state.etag,
        "last_modified": state.last_modified,
        "content_hash": state.content_hash,
        "refs": state.refs,
        "checked_at": state.checked_at,
    }
    with engine.begin() as conn:
        done = conn.execute(
            update(factory_poll_state)
            .where(factory_poll_state.c.knot == knot, factory_poll_state.c.source == source)
            .values(**values)
        )
        if done.rowcount == 0:
            conn.execute(insert(factory_poll_state).values(knot=knot, source=source, **values))


def ls_remote(url: str, timeout: float = 60.0) -> dict[str, str]:
    proc = subprocess.run(
        ["git", "ls-remote", "--heads", "--tags", url],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    if proc.returncode != 0:
        raise OSError(f"git ls-remote {url} failed: {proc.stderr.strip()[:200]}")
    return parse_ls_remote(proc.stdout)


def poll_git(engine: Engine, knot: Knot, now: dt.datetime | None = None) -> dict[str, str]:
    """Refs of interest that moved since the last poll (ref -> sha).

    The first poll of a knot only records what it sees: adding a knot does
    not rebuild every old tag (use ``asterfleet knot build`` for that).
    """
    state = load_state(engine, knot.name, "git")
    refs = ls_remote(knot.git_url)
    moved = changed_refs(state.refs, refs) if state.known else {}
    state.refs = refs
    state.checked_at = now or utcnow()
    save_state(engine, knot.name, "git", state)
    return {r: s for r, s in moved.items() if wants_ref(knot, r)}


def poll_url(
    engine: Engine, knot: Knot, client: httpx.Client, now: dt.datetime | None = None
) -> bool:
    """Whether the knot's watched URL changed since the last poll."""
    url = knot.triggers.url
    if url is None:
        return False
    state = load_state(engine, knot.name, url)
    headers = {}
    if state.etag:
        headers["If-None-Match"] = state.etag
    if state.last_modified:
        headers["If-Modified-Since"] = state.last_modified
    resp = client.get(url, headers=headers)
    state.checked_at = now or utcnow()
    changed = False
    if resp.status_code == 304:
        pass
    elif resp.is_success:
        digest = hashlib.sha256(resp.content).hexdigest()
        changed = state.known and state.content_hash is not None and digest != state.content_hash
        state.content_hash = digest
        state.etag = resp.headers.get("etag")
        state.last_modified = resp.headers.get("last-modified")
    else:
        log.warning("url_poll_failed", knot=knot.name, url=url, status=resp.status_code)
    save_state(engine, knot.name, url, state)
    return changed
