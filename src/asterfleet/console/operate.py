"""Operator actions from the console and the API: the fleet's own actions,
signed with who did it and counted; the console's watch records the change."""

from __future__ import annotations

import structlog

from asterfleet.console.security import Principal, require_write
from asterfleet.console.state import ConsoleState
from asterfleet.errors import AsterfleetError, UsageError
from asterfleet.fleet import actions
from asterfleet.fleet.model import AdminIntent

log = structlog.get_logger("asterfleet.console")

ACTIONS = ("drain", "undrain", "weight")


def parse_weight(text: str | None) -> int | None:
    """A weight from a form: empty means back to the agent's own weight."""
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(
            f"weight {text!r} is not a number: use 0 to 1000, or leave empty to clear"
        ) from None


async def perform(
    st: ConsoleState,
    who: Principal,
    action: str,
    node_id: str,
    weight: int | None = None,
    note: str | None = None,
) -> AdminIntent:
    """Run one action through asterfleet.fleet.actions (the CLI's own code)."""
    require_write(who)
    etcd, ks, by = st.require_etcd(), st.ks, who.actor
    note = (note or "").strip()[:200] or None
    try:
        if action == "drain":
            intent = await actions.drain(etcd, ks, node_id, by, note)
        elif action == "undrain":
            intent = await actions.undrain(etcd, ks, node_id, by, note)
        elif action == "weight":
            intent = await actions.set_weight(etcd, ks, node_id, weight, by, note)
        else:
            raise UsageError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    except AsterfleetError as exc:
        st.metrics.actions.labels(action, "refused").inc()
        log.info("action_refused", action=action, node=node_id, by=by, error=str(exc))
        raise
    st.metrics.actions.labels(action, "done").inc()
    # The event comes from the change itself (the console's watch), signed
    # with the intent's author: one event per change, whoever made it.
    log.info("action", action=action, node=node_id, by=by, weight=weight, note=note)
    return intent
