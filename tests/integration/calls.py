"""Reading a SIPp caller's outcomes the way an operator reads them (the
counting itself is :class:`asterfleet.sipp.runner.SippUac`'s)."""

from __future__ import annotations

from asterfleet.sipp.runner import SippUac


def setup_failures(uac: SippUac) -> int:
    """Calls that failed before being answered: what failover must prevent."""
    return uac.setup_failures()


def established_then_lost(uac: SippUac) -> int:
    """Calls answered, then lost with their box (their BYE got no 200)."""
    return uac.established_then_lost()
