"""How the node agent decides its own state (pure).

Every change of the agent's state goes through :func:`next_state`: the
probe loop and a drain request both ask it, with the agent's current state
and drain flag, and the agent writes the answer at once, without awaiting
anything in between, so a decision is never made from a stale view.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from asterfleet.fleet.model import NodeState

# Answers that prove a SIP stack is up and taking requests. 401, 403 and 404
# are not among them: a box that answers the agent's own probe with those
# does not identify the probe (Asterisk 22 answers 401 to an OPTIONS from an
# address no endpoint matches), so a graceful stop would stay invisible.
ALIVE_CODES = frozenset({405, 407, 484, 501})
# The probe reached the box but the box does not know it: a setup mistake.
CONFIG_ERROR_CODES = frozenset({401, 403, 404})
# Asterisk's `core stop gracefully` answers OPTIONS (and INVITE) with 503.
SHUTTING_DOWN = 503


class ProbeVerdict(StrEnum):
    """What one probe says about the box."""

    ALIVE = "alive"
    SHUTTING_DOWN = "shutting-down"  # 503: the box drains itself
    REFUSED = "refused"  # nothing listens: the box is down
    CONFIG_ERROR = "config-error"  # 401/403/404: the probe is not identified
    MISSED = "missed"  # no answer in time, or another error status


def is_alive(status: int | None) -> bool:
    return status is not None and (200 <= status < 300 or status in ALIVE_CODES)


def classify(status: int | None, error: str | None = None) -> ProbeVerdict:
    """The verdict of one probe from its SIP status (None: no answer) and,
    when there was no answer, the probe's error text."""
    if status is None:
        return ProbeVerdict.REFUSED if error == "connection refused" else ProbeVerdict.MISSED
    if status == SHUTTING_DOWN:
        return ProbeVerdict.SHUTTING_DOWN
    if status in CONFIG_ERROR_CODES:
        return ProbeVerdict.CONFIG_ERROR
    if is_alive(status):
        return ProbeVerdict.ALIVE
    return ProbeVerdict.MISSED


@dataclass(frozen=True)
class ProbeHistory:
    """What the agent remembers between probes."""

    failures: int = 0  # consecutive probes without a live answer


@dataclass(frozen=True)
class Decision:
    """The agent's state after one step, and why (None: nothing to explain)."""

    state: NodeState
    history: ProbeHistory
    reason: str | None = None


def config_error_reason(status: int | None) -> str:
    return (
        f"probe answered {status}: the box does not identify the agent's OPTIONS probe "
        "(give the agent an identified endpoint: asterfleet asterisk config does)"
    )


def next_state(
    current: NodeState,
    history: ProbeHistory,
    verdict: ProbeVerdict | None,
    draining: bool,
    unhealthy_after: int,
    status: int | None = None,
) -> Decision:
    """The agent's state after one step.

    ``verdict`` is the probe's verdict, None when the agent does not probe
    (the box is then assumed up) or when the step is a drain request with
    no new probe. Rules, strictest first:

    * a box that refuses the connection is down: ``unhealthy`` at once;
    * a probe the box does not identify (401/403/404) is a configuration
      error: ``unhealthy`` with the reason, never alive;
    * ``unhealthy_after`` missed probes in a row: ``unhealthy``;
    * a drain requested locally, or a 503 (graceful stop): ``draining``;
    * a live answer: ``active``;
    * a single missed probe changes nothing: it keeps the previous state
      (so it never makes a draining or unhealthy node active).
    """
    if verdict is None:
        if current is NodeState.STARTING and history.failures == 0 and not draining:
            # Not probing: no evidence against the box.
            return Decision(NodeState.ACTIVE, history)
        if draining and current is not NodeState.UNHEALTHY:
            return Decision(NodeState.DRAINING, history, "drain requested")
        return Decision(current, history)
    if verdict is ProbeVerdict.REFUSED:
        return Decision(
            NodeState.UNHEALTHY,
            ProbeHistory(history.failures + 1),
            "probe: connection refused (nothing listens on the SIP port)",
        )
    if verdict is ProbeVerdict.CONFIG_ERROR:
        return Decision(
            NodeState.UNHEALTHY, ProbeHistory(history.failures + 1), config_error_reason(status)
        )
    if verdict is ProbeVerdict.MISSED:
        hist = ProbeHistory(history.failures + 1)
        if hist.failures >= unhealthy_after:
            # A stable text: the record is not rewritten at every further miss.
            return Decision(
                NodeState.UNHEALTHY, hist, f"no answer to {unhealthy_after} probes in a row"
            )
        if draining and current is not NodeState.UNHEALTHY:
            return Decision(NodeState.DRAINING, hist, "drain requested")
        return Decision(current, hist)
    ok = ProbeHistory(0)
    if verdict is ProbeVerdict.SHUTTING_DOWN:
        return Decision(NodeState.DRAINING, ok, "box answers 503 (graceful stop)")
    if draining:
        return Decision(NodeState.DRAINING, ok, "drain requested")
    return Decision(NodeState.ACTIVE, ok)
