"""The gate a replaced box passes before it takes calls again: N test calls
through each load balancer, all answered.

The box is still drained, so the balancers would not pick it: each test call
names it in ``X-Asterfleet-Gate``, which the generated Kamailio config
honours for INVITEs from its gate sources only, and only for a box in its
list, with no failover (a failing box fails its gate).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from asterfleet.errors import AsterfleetError, UsageError
from asterfleet.sipp.runner import SippUac

GATE_HEADER = "X-Asterfleet-Gate"
PASSED = "passed"
# A test call passes when its INVITE is answered 200 (SippUac.answered). What
# follows (a BYE lost on a loaded machine) says nothing about the box's
# version.


def gate_scenario(box_uri: str) -> str:
    """The packaged UAC scenario, its INVITE naming ``box_uri`` for the balancer."""
    if any(c in box_uri for c in "\r\n<>]"):
        raise UsageError(f"SIP URI {box_uri!r} cannot go in a header")
    text = (
        resources.files("asterfleet.sipp")
        .joinpath("scenarios", "uac.xml")
        .read_text(encoding="iso-8859-1")
    )
    marker = "      Subject: asterfleet load\n"
    if marker not in text:
        raise AsterfleetError("the packaged uac.xml has no Subject line to add the gate after")
    return text.replace(marker, marker + f"      {GATE_HEADER}: {box_uri}\n", 1)


@dataclass(frozen=True)
class GateCalls:
    """Where and how the test calls go."""

    balancers: tuple[tuple[str, int], ...]  # SIP host, port of each load balancer
    hold_ms: int = 200
    rate: float = 10.0
    timeout: float = 60.0


def run_gate(box_uri: str, calls: int, how: GateCalls) -> str:
    """``"passed"``, or why not, after ``calls`` test calls through each balancer."""
    if calls <= 0:
        return PASSED
    if not how.balancers:
        return "no balancer to send the gate calls through (--gate-via)"
    with tempfile.TemporaryDirectory(prefix="asterfleet-gate-") as tmp:
        scenario = Path(tmp) / "gate.xml"
        scenario.write_text(gate_scenario(box_uri), encoding="iso-8859-1")
        for host, port in how.balancers:
            uac = SippUac(
                Path(tmp) / f"{host}-{port}",
                host,
                port,
                rate=how.rate,
                hold_ms=how.hold_ms,
                max_calls=calls,
                recv_timeout_ms=5000,
                scenario=scenario,
                name="gate",
            )
            try:
                uac.start()
                uac.wait(how.timeout)
                stats = uac.stats()
                answered = uac.answered()
            except AsterfleetError as exc:
                return f"the gate calls through {host}:{port} did not run: {exc}"
            finally:
                uac.stop()
            if answered < calls:
                causes = ", ".join(f"{k} {v}" for k, v in sorted(stats.failures.items()) if v)
                return (
                    f"{calls - answered} of {calls} test calls through {host}:{port} were not "
                    "answered" + (f" ({causes})" if causes else "")
                )
    return PASSED
