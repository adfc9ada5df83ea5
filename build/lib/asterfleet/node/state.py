"""How the node agent decides its own state from what its probe saw (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from asterfleet.fleet.model import NodeState

# Answers that prove a SIP stack is up and taking requests; the same set the
# generated kamailio.cfg counts for OPTIONS probing. 503 means "shutting
# down gracefully" (Asterisk's `core stop gracefully`).
ALIVE_CODES = frozenset({401, 403, 404, 405, 407, 484, 501})


def is_alive(status: int | None) -> bool:
    return status is not None and (200 <= status < 300 or status in ALIVE_CODES)


@dataclass(frozen=True)
class ProbeHistory:
    """What the agent remembers between probes."""

    ever_alive: bool = False
    failures: int = 0  # consecutive failed probes


def next_state(
    history: ProbeHistory,
    status: int | None,
    probing: bool,
    draining: bool,
    unhealthy_after: int,
) -> tuple[NodeState, ProbeHistory]:
    """The agent's state after one probe.

    ``status`` is the SIP status of the probe's answer (None: no answer).
    With probing off the box is assumed up. A drain requested locally
    (SIGTERM) wins over everything; a 503 answer means the box drains itself.
    """
    if not probing:
        hist = ProbeHistory(ever_alive=True, failures=0)
        return (NodeState.DRAINING if draining else NodeState.ACTIVE), hist
    if status == 503:
        hist = ProbeHistory(ever_alive=True, failures=0)
        return NodeState.DRAINING, hist
    if is_alive(status):
        hist = ProbeHistory(ever_alive=True, failures=0)
        return (NodeState.DRAINING if draining else NodeState.ACTIVE), hist
    hist = ProbeHistory(ever_alive=history.ever_alive, failures=history.failures + 1)
    if draining:
        return NodeState.DRAINING, hist
    if not hist.ever_alive and hist.failures < unhealthy_after:
        return NodeState.STARTING, hist
    if hist.failures >= unhealthy_after:
        return NodeState.UNHEALTHY, hist
    # A single missed probe after being up: keep the previous verdict.
    return NodeState.ACTIVE, hist
