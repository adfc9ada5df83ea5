"""The watcher's memory, kept across restarts in one JSON file.

- ``feeds``: per URL, the validators of the last answer (ETag,
  Last-Modified), the SHA-256 of its body and the body itself, so a 304 or an
  unchanged body needs no parsing of anything new;
- ``proposals``: per version, the request (or push) made for it: never two
  for the same version.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError

from asterfleet.errors import UsageError


class FeedCache(BaseModel):
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None
    body: str = ""


class Proposal(BaseModel):
    version: str
    branch: str  # the tracked Asterisk branch
    git_branch: str  # the branch pushed (the proposal's head, or base for a push)
    url: str | None = None  # the pull/merge request
    mode: str


class State(BaseModel):
    feeds: dict[str, FeedCache] = {}
    proposals: dict[str, Proposal] = {}


def load_state(path: Path) -> State:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return State()
    except OSError as exc:
        raise UsageError(f"state file {path}: {exc.strerror}") from None
    try:
        return State.model_validate_json(text)
    except ValidationError:
        raise UsageError(
            f"state file {path} is damaged; move it away (the watcher then re-reads the "
            "feeds and asks the forge for open requests)"
        ) from None


def save_state(path: Path, state: State) -> None:
    """Write atomically: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state.model_dump(mode="json"), indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UsageError(f"state file {path}: cannot write: {exc.strerror}") from None
