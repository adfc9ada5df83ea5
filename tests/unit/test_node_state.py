"""The node agent's own verdict after each probe."""

from __future__ import annotations

import pytest

from asterfleet.fleet.model import NodeState
from asterfleet.node.state import ProbeHistory, is_alive, next_state

UP = ProbeHistory(ever_alive=True)
NEW = ProbeHistory()


@pytest.mark.parametrize(
    ("history", "status", "probing", "draining", "state", "failures"),
    [
        (NEW, 200, True, False, NodeState.ACTIVE, 0),
        (NEW, None, True, False, NodeState.STARTING, 1),
        (ProbeHistory(False, 1), None, True, False, NodeState.UNHEALTHY, 2),
        (UP, None, True, False, NodeState.ACTIVE, 1),  # one miss is tolerated
        (ProbeHistory(True, 1), None, True, False, NodeState.UNHEALTHY, 2),
        (ProbeHistory(True, 5), 200, True, False, NodeState.ACTIVE, 0),  # recovers
        (UP, 503, True, False, NodeState.DRAINING, 0),  # core stop gracefully
        (UP, 404, True, False, NodeState.ACTIVE, 0),  # alive, just no such user
        (UP, 500, True, False, NodeState.ACTIVE, 1),
        (UP, 200, True, True, NodeState.DRAINING, 0),
        (UP, None, True, True, NodeState.DRAINING, 1),
        (NEW, None, False, False, NodeState.ACTIVE, 0),
        (NEW, None, False, True, NodeState.DRAINING, 0),
    ],
)
def test_next_state(
    history: ProbeHistory,
    status: int | None,
    probing: bool,
    draining: bool,
    state: NodeState,
    failures: int,
) -> None:
    got, hist = next_state(history, status, probing, draining, unhealthy_after=2)
    assert got is state
    assert hist.failures == failures


@pytest.mark.parametrize(
    ("status", "alive"),
    [(200, True), (202, True), (401, True), (501, True), (503, False), (408, False), (None, False)],
)
def test_is_alive(status: int | None, alive: bool) -> None:
    assert is_alive(status) is alive
