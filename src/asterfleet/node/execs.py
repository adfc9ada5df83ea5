"""`asterfleet node exec`: an Asterisk CLI command run on a node over AMI.

The operator's command does not reach Asterisk directly (its AMI permits
only the node agent): the CLI writes a request under
``exec/<node>/<request-id>`` in etcd, the node's agent runs it over its AMI
session and writes the result into the same record. The record stays as
the event: who asked, when, what, and what came back.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ExecState = Literal["pending", "done", "refused"]
# A request older than this when the agent sees it is not run (the agent
# was away; the operator has given up waiting).
MAX_AGE = 60.0


class ExecRequest(BaseModel):
    """One `node exec` request and, once run, its result."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    command: str = Field(min_length=1, max_length=500)
    by: str = ""
    at: float = 0.0
    state: ExecState = "pending"
    ok: bool | None = None
    output: list[str] = Field(default_factory=list)
    done_at: float | None = None


def check_command(command: str) -> str:
    """The command if it can go in an AMI action (one line), else ValueError."""
    text = command.strip()
    if not text or "\r" in text or "\n" in text or len(text) > 500:
        raise ValueError(
            f"CLI command {command!r}: give one line of at most 500 characters, "
            "e.g. 'pjsip show endpoints'"
        )
    return text


def to_json(req: ExecRequest) -> bytes:
    return req.model_dump_json(exclude_none=True).encode()
