"""Kamailio's failure route blames the box that failed, also after a
failover: when the fallback box fails too, it is the fallback that is
marked, not the first box again (in the failure route, ``$du`` still names
the transaction's first destination)."""

from __future__ import annotations

import re

import pytest

from asterfleet.lab.stack import Stack
from asterfleet.runtime.process import wait_for

pytestmark = pytest.mark.integration

FAILED = re.compile(r"destination (\S+) failed \((\d+)\) for INVITE")


def failures(stack: Stack) -> list[tuple[str, str]]:
    assert stack.kamailio is not None
    return FAILED.findall(stack.kamailio.log_path.read_text(errors="replace"))


def test_a_failing_fallback_box_is_marked_not_the_first_box(stack: Stack) -> None:
    # Both boxes ring 3 s, then answer 503: the one call tries both.
    boxes = [stack.add_node(f"ast{i}", scenario="uas_ring_503.xml") for i in (1, 2)]
    for box in boxes:
        stack.wait_routable(box, timeout=60)
    uac = stack.start_calls(rate=1, hold_ms=0, max_calls=1, name="one")
    wait_for(lambda: len(failures(stack)) >= 2, 30, what="two failures in Kamailio's log")
    uac.wait(30)
    assert all(box.uas.invites_received() == 1 for box in boxes), "the call did not try both"
    found = failures(stack)
    first, second, code = found[0][0], found[1][0], found[1][1]
    uris = {box.sip_uri for box in boxes}
    assert first in uris and second in uris
    assert second != first, f"the fallback's {code} was blamed on the first box {first}"
