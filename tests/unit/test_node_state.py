"""The node agent's own verdict after each probe or drain request."""

from __future__ import annotations

import pytest

from asterfleet.fleet.model import NodeState
from asterfleet.node.state import ProbeHistory, ProbeVerdict, classify, is_alive, next_state

A, S, D, U = NodeState.ACTIVE, NodeState.STARTING, NodeState.DRAINING, NodeState.UNHEALTHY
V = ProbeVerdict
OK = ProbeHistory(0)
ONE = ProbeHistory(1)


@pytest.mark.parametrize(
    ("current", "history", "verdict", "draining", "state", "failures"),
    [
        # A new box answers: active.
        (S, OK, V.ALIVE, False, A, 0),
        # A new box that is slow to start is given unhealthy_after probes.
        (S, OK, V.MISSED, False, S, 1),
        (S, ONE, V.MISSED, False, U, 2),
        # One missed probe on an active box is tolerated...
        (A, OK, V.MISSED, False, A, 1),
        # ...two are not.
        (A, ONE, V.MISSED, False, U, 2),
        # A single missed probe never makes a draining or unhealthy box active.
        (D, OK, V.MISSED, False, D, 1),
        (U, ProbeHistory(5), V.MISSED, False, U, 6),
        (U, OK, V.MISSED, False, U, 1),
        # Connection refused: nothing listens, the box is down at once,
        # whatever it was (Asterisk exiting at the end of a graceful stop).
        (A, OK, V.REFUSED, False, U, 1),
        (D, OK, V.REFUSED, False, U, 1),
        (D, OK, V.REFUSED, True, U, 1),
        (S, OK, V.REFUSED, False, U, 1),
        # 401/403/404 to the agent's probe: a setup mistake, never alive.
        (A, OK, V.CONFIG_ERROR, False, U, 1),
        (S, OK, V.CONFIG_ERROR, False, U, 1),
        # A box that recovers becomes active again.
        (U, ProbeHistory(5), V.ALIVE, False, A, 0),
        # 503: Asterisk's core stop gracefully.
        (A, OK, V.SHUTTING_DOWN, False, D, 0),
        (S, OK, V.SHUTTING_DOWN, False, D, 0),
        # A local drain (SIGTERM) wins over a live answer and over a miss.
        (A, OK, V.ALIVE, True, D, 0),
        (A, OK, V.MISSED, True, D, 1),
        # ...but a dead box during a drain is reported as dead.
        (D, ONE, V.MISSED, True, U, 2),
        # No probe (probing off, or a drain request on its own).
        (S, OK, None, False, A, 0),
        (A, OK, None, True, D, 0),
        (S, OK, None, True, D, 0),
        (U, ONE, None, True, U, 1),  # unhealthy is stricter than draining
        (D, OK, None, False, D, 0),
    ],
)
def test_next_state(
    current: NodeState,
    history: ProbeHistory,
    verdict: ProbeVerdict | None,
    draining: bool,
    state: NodeState,
    failures: int,
) -> None:
    got = next_state(current, history, verdict, draining, unhealthy_after=2)
    assert got.state is state
    assert got.history.failures == failures


def test_config_error_reason_names_the_status() -> None:
    got = next_state(A, OK, V.CONFIG_ERROR, False, unhealthy_after=2, status=401)
    assert got.reason is not None and "401" in got.reason and "identif" in got.reason


def test_refused_reason() -> None:
    got = next_state(A, OK, V.REFUSED, False, unhealthy_after=2)
    assert got.reason is not None and "refused" in got.reason


def test_drain_decided_while_probe_in_flight_wins() -> None:
    # The agent decides with the drain flag as it is when the probe returns:
    # a drain set while the probe was out is never overwritten by "active".
    after_drain = next_state(A, OK, None, True, unhealthy_after=2)
    after_probe = next_state(after_drain.state, after_drain.history, V.ALIVE, True, 2)
    assert (after_drain.state, after_probe.state) == (D, D)


@pytest.mark.parametrize(
    ("status", "error", "verdict"),
    [
        (200, None, V.ALIVE),
        (202, None, V.ALIVE),
        (405, None, V.ALIVE),
        (501, None, V.ALIVE),
        (401, None, V.CONFIG_ERROR),  # Asterisk 22: OPTIONS from an unknown address
        (403, None, V.CONFIG_ERROR),
        (404, None, V.CONFIG_ERROR),
        (503, None, V.SHUTTING_DOWN),
        (500, None, V.MISSED),
        (408, None, V.MISSED),
        (None, "no answer within 1s", V.MISSED),
        (None, "connection refused", V.REFUSED),
    ],
)
def test_classify(status: int | None, error: str | None, verdict: ProbeVerdict) -> None:
    assert classify(status, error) is verdict


@pytest.mark.parametrize(
    ("status", "alive"),
    [
        (200, True),
        (202, True),
        (401, False),
        (501, True),
        (503, False),
        (408, False),
        (None, False),
    ],
)
def test_is_alive(status: int | None, alive: bool) -> None:
    assert is_alive(status) is alive
