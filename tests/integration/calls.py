"""Reading a SIPp caller's counters the way an operator reads call outcomes."""

from __future__ import annotations

from asterfleet.sipp.runner import SippUac

# Message indexes in sipp/scenarios/uac.xml: the 200 answering the INVITE
# (step 4) and the 200 answering the BYE (step 8).
INVITE_ANSWER = "4_200"
BYE_ANSWER = "8_200"


def setup_failures(uac: SippUac) -> int:
    """Calls that failed before being answered: what failover must prevent."""
    counts = uac.message_counts()
    return sum(counts.get(f"{INVITE_ANSWER}_{k}", 0) for k in ("Unexp", "Timeout"))


def established_then_lost(uac: SippUac) -> int:
    """Calls answered, then lost with their box (their BYE got no 200)."""
    counts = uac.message_counts()
    return sum(counts.get(f"{BYE_ANSWER}_{k}", 0) for k in ("Unexp", "Timeout"))
