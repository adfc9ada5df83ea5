"""Kamailio's in-memory dispatcher state against the rendered list."""

from __future__ import annotations

import pytest

from asterfleet.balancer.drift import DISABLE, REPROBE, drift
from asterfleet.fleet.dispatcher_list import FLAG_DISABLED, FLAG_PROBING, Destination
from asterfleet.fleet.model import EffectiveState
from asterfleet.kamailio.rpc import DispatcherDestination

A = "sip:10.0.0.1:5060;transport=udp"
B = "sip:10.0.0.2:5060;transport=udp"


def want(uri: str, routable: bool, node: str = "n") -> Destination:
    return Destination(
        set_id=1,
        uri=uri,
        flags=FLAG_PROBING if routable else FLAG_DISABLED,
        priority=0,
        node_id=node,
        state=EffectiveState.ACTIVE if routable else EffectiveState.DRAINING,
        weight=50,
        max_calls=0,
    )


def held(uri: str, flags: str) -> DispatcherDestination:
    return DispatcherDestination(set_id=1, uri=uri, flags=flags, priority=0)


@pytest.mark.parametrize(
    ("routable", "flags", "fix"),
    [
        (False, "DX", None),  # drained and disabled: as it should be
        (False, "IP", DISABLE),  # a failure route marked it: it would come back
        (False, "AP", DISABLE),  # it takes calls: the bug the issue saw
        (True, "AP", None),
        (True, "IP", None),  # routable but down: probing decides, not us
        (True, "TP", None),
        (True, "DX", REPROBE),  # someone disabled a node the fleet wants
    ],
)
def test_state_fixes(routable: bool, flags: str, fix: str | None) -> None:
    got = drift([want(A, routable)], [held(A, flags)])
    assert got.reload_because is None
    assert [f.state for f in got.fixes] == ([] if fix is None else [fix])
    assert got.none is (fix is None)


def test_a_destination_missing_in_kamailio_needs_a_reload() -> None:
    got = drift([want(A, True), want(B, False)], [held(A, "AP")])
    assert got.reload_because is not None and B in got.reload_because


def test_a_destination_unknown_to_the_fleet_needs_a_reload() -> None:
    got = drift([want(A, True)], [held(A, "AP"), held(B, "AP")])
    assert got.reload_because is not None and "unknown" in got.reload_because


def test_an_empty_fleet_and_an_empty_kamailio_agree() -> None:
    assert drift([], []).none
