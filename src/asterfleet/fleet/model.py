"""The fleet's records in etcd, validated on write and on read.

A node record is written by the node agent under its lease; an admin record
holds operator intent and outlives agent restarts; a balancer record is a
balancer's applied state. All three are JSON objects.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from asterfleet.errors import RecordError

NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SIP_URI_RE = re.compile(
    r"^sips?:(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?(?:;[A-Za-z0-9_.=-]+)*$"
)


# NodeRecord.calls_error when the agent has no call-count source at all.
NO_CALL_COUNTER = "the agent runs with --calls none"


class NodeState(StrEnum):
    """What the node agent says about its own box."""

    STARTING = "starting"
    ACTIVE = "active"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"


class EffectiveState(StrEnum):
    """What the balancers act on: the stricter of agent state and intent."""

    ACTIVE = "active"
    STARTING = "starting"
    DRAINING = "draining"
    DRAINED = "drained"  # draining, and its agent reports no calls left
    MAINTENANCE = "maintenance"
    UNHEALTHY = "unhealthy"


# Stricter states have higher rank. Only ACTIVE takes new calls.
STRICTNESS: dict[EffectiveState, int] = {
    EffectiveState.ACTIVE: 0,
    EffectiveState.STARTING: 1,
    EffectiveState.DRAINING: 2,
    EffectiveState.DRAINED: 2,
    EffectiveState.MAINTENANCE: 3,
    EffectiveState.UNHEALTHY: 4,
}

NodeId = Annotated[str, Field(pattern=NODE_ID_RE.pattern)]


def check_node_id(node_id: str) -> str:
    """``node_id`` if valid, else RecordError saying what a node id may be."""
    if not NODE_ID_RE.match(node_id):
        raise RecordError(
            f"invalid node id {node_id!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return node_id


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, use_enum_values=False)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class NodeRecord(_Record):
    """A node's self-description, kept alive by its agent's lease."""

    id: NodeId
    set: int = Field(default=1, ge=0, le=65535)
    sip_uri: str
    media_address: str | None = None
    weight: int = Field(default=1, ge=0, le=1000)
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_calls: int = Field(default=0, ge=0, le=1_000_000)  # 0 = unlimited
    state: NodeState = NodeState.STARTING
    active_calls: int | None = Field(default=None, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    version: str | None = None  # Asterisk / image version
    agent_version: str | None = None
    started_at: float = Field(default=0.0, ge=0)
    updated_at: float = Field(default=0.0, ge=0)
    probe: str | None = None  # last probe outcome, for operators
    reason: str | None = None  # why the agent chose its state (e.g. a setup mistake)
    calls_error: str | None = None  # why active_calls is unknown (AMI trouble)
    asterisk_version: str | None = None  # as Asterisk reports it over AMI

    @field_validator("sip_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not SIP_URI_RE.match(v):
            raise ValueError(f"not a SIP URI like sip:10.0.0.5:5060;transport=udp: {v!r}")
        return v


class AdminIntent(_Record):
    """Operator intent for one node; no lease, survives agent restarts."""

    drain: bool = False
    maintenance: bool = False
    weight: int | None = Field(default=None, ge=0, le=1000)
    note: str = ""
    by: str = ""
    at: float = 0.0

    def is_default(self) -> bool:
        return not self.drain and not self.maintenance and self.weight is None


class BalancerStatus(_Record):
    """A balancer's applied state, under the balancer's lease."""

    id: str
    revision: int = 0  # etcd revision of the snapshot applied
    list_hash: str = ""
    nodes: int = 0
    routable: int = 0
    last_reload_ok: bool = True
    last_reload_at: float = 0.0
    last_error: str | None = None
    algorithm: str = "weight"
    agent_version: str | None = None
    # Where this balancer's Kamailio sends SIP from: Asterisk boxes identify
    # calls by these (asterfleet asterisk config --etcd reads them).
    sip_addresses: tuple[str, ...] = ()
    # The HEP capture id its Kamailio sends with every captured message: how
    # the console names the balancer on a call's ladder.
    capture_id: int | None = Field(default=None, ge=0, le=2**32 - 1)
    updated_at: float = 0.0


def _parse(model: type[BaseModel], key: str, raw: bytes) -> Any:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{key}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RecordError(f"{key}: expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()
        )
        raise RecordError(f"{key}: {problems}") from exc


#: Any JSON record of the fleet's keyspace (rollouts too), validated the same way.
parse_record = _parse


def parse_node(key: str, raw: bytes) -> NodeRecord:
    rec: NodeRecord = _parse(NodeRecord, key, raw)
    expected = key.rsplit("/", 1)[-1]
    if rec.id != expected:
        raise RecordError(f"{key}: record id {rec.id!r} does not match its key")
    return rec


def parse_admin(key: str, raw: bytes) -> AdminIntent:
    intent: AdminIntent = _parse(AdminIntent, key, raw)
    return intent


def parse_balancer(key: str, raw: bytes) -> BalancerStatus:
    status: BalancerStatus = _parse(BalancerStatus, key, raw)
    return status


def effective_state(node: NodeRecord, intent: AdminIntent | None) -> EffectiveState:
    """The stricter of the agent's state and the operator's intent; a draining
    node whose agent reports no calls left is ``drained`` (safe to stop).

    The one place "drained" is decided: the CLI, the console, the metrics
    and ``fleet drain --wait`` all read it from here.
    """
    state = EffectiveState(node.state.value)
    if intent is not None:
        wanted = EffectiveState.ACTIVE
        if intent.drain:
            wanted = EffectiveState.DRAINING
        if intent.maintenance:
            wanted = EffectiveState.MAINTENANCE
        state = max(state, wanted, key=STRICTNESS.__getitem__)
    if state is EffectiveState.DRAINING and node.active_calls == 0:
        return EffectiveState.DRAINED
    return state


def effective_weight(node: NodeRecord, intent: AdminIntent | None) -> int:
    if intent is not None and intent.weight is not None:
        return intent.weight
    return node.weight
