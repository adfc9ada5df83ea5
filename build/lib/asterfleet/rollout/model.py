"""A rollout as stored in etcd under ``/asterfleet/<cluster>/rollouts/<id>``.

The record is the whole truth about a rollout: the target, the order of the
nodes, and where each node is. The controller rewrites it only by
compare-and-swap, so an operator's pause or abort is never lost.
"""

from __future__ import annotations

import re
import secrets
import time
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from asterfleet.errors import RecordError, UsageError
from asterfleet.fleet.model import NodeId, parse_record

ROLLOUT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class RolloutState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


FINISHED = (RolloutState.SUCCEEDED, RolloutState.FAILED, RolloutState.ABORTED)


class Phase(StrEnum):
    """Where one node is in the rollout."""

    PENDING = "pending"
    DRAINING = "draining"  # drain written; waiting until applied and idle
    REPLACING = "replacing"  # replace action run; waiting for the new box
    GATING = "gating"  # new box up with the target; test calls next
    DONE = "done"  # at the target, taking calls again
    ROLLING_BACK = "rolling-back"  # gate failed: old version being put back
    ROLLED_BACK = "rolled-back"
    FAILED = "failed"  # could not be rolled back: left drained for an operator
    SKIPPED = "skipped"  # already at the target when the rollout started


#: Phases in which the node does not take new calls because of the rollout.
BUSY = (Phase.DRAINING, Phase.REPLACING, Phase.GATING, Phase.ROLLING_BACK)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Target(_Model):
    """What a node should run: an Asterisk version, an image reference, or both."""

    version: str | None = None
    image: str | None = None

    def describe(self) -> str:
        return " ".join(x for x in (self.image, self.version and f"version {self.version}") if x)


class NodeProgress(_Model):
    id: NodeId
    phase: Phase = Phase.PENDING
    since: float = 0.0  # when the node entered its phase
    started: float = 0.0  # when the rollout drained it
    target: Target = Field(default_factory=Target)
    previous: Target = Field(default_factory=Target)  # what it ran before (rollback, undo)
    drain_revision: int = 0  # etcd revision of the drain write: balancers must reach it
    replace_issued: bool = False
    keep_drained: bool = False  # drained by an operator before its turn: stays drained
    gate: str | None = None  # "passed" or why it failed
    message: str = ""


class Rollout(_Model):
    id: str = Field(pattern=ROLLOUT_ID_RE.pattern)
    cluster: str
    target: Target
    state: RolloutState = RolloutState.RUNNING
    reason: str = ""
    max_unavailable: int = Field(default=1, ge=1, le=100)
    gate_calls: int = Field(default=0, ge=0, le=1000)
    pause_after: int | None = Field(default=None, ge=1)
    drain_timeout: float = Field(default=300.0, gt=0)
    replace_timeout: float = Field(default=180.0, gt=0)
    nodes: list[NodeProgress] = Field(default_factory=list)
    undo_of: str | None = None
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def actor(self) -> str:
        """Who the rollout's drains and undrains are signed by."""
        return f"rollout:{self.id}"

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def node(self, node_id: str) -> NodeProgress | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.phase.value] = out.get(n.phase.value, 0) + 1
        return out

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def new_rollout_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"r{stamp}-{secrets.token_hex(2)}"


def check_rollout_id(rollout_id: str) -> str:
    if not ROLLOUT_ID_RE.match(rollout_id):
        raise UsageError(
            f"invalid rollout id {rollout_id!r}: see 'asterfleet rollout status' for the ids"
        )
    return rollout_id


def parse_rollout(key: str, raw: bytes) -> Rollout:
    rollout: Rollout = parse_record(Rollout, key, raw)
    if rollout.id != key.rsplit("/", 1)[-1]:
        raise RecordError(f"{key}: rollout id {rollout.id!r} does not match its key")
    return rollout
