"""What Kamailio holds versus what the fleet wants (pure).

The balancer renders ``dispatcher.list`` from etcd, but Kamailio's
in-memory state can move away from the file: any state change on an
admin-disabled destination (``ds_mark_dst`` in a failure route,
``dispatcher.set_state``) turns it from ``DX`` into ``IP`` and the next
probe reply into ``AP``, so a drained box takes calls again. :func:`drift`
compares Kamailio's ``dispatcher.list`` with the rendered destinations and
says how to correct it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from asterfleet.fleet.dispatcher_list import Destination
from asterfleet.kamailio.rpc import DispatcherDestination

# dispatcher.set_state states used for corrections.
DISABLE = "d"  # admin-disabled, not probed (DX), as the file says
REPROBE = "ip"  # inactive and probing: the next OPTIONS reply decides


@dataclass(frozen=True)
class StateFix:
    """One ``dispatcher.set_state`` call: state, set, destination URI."""

    state: str
    set_id: int
    uri: str
    node_id: str
    held: str  # the flags Kamailio showed (e.g. "AP")


@dataclass(frozen=True)
class Drift:
    """How Kamailio's view differs from the rendered list."""

    # Destinations missing from Kamailio or unknown to the list: only a
    # reload of the file fixes those.
    reload_because: str | None = None
    fixes: list[StateFix] = field(default_factory=list)

    @property
    def none(self) -> bool:
        return self.reload_because is None and not self.fixes


def drift(desired: Iterable[Destination], held: Iterable[DispatcherDestination]) -> Drift:
    """Compare rendered destinations with ``dispatcher.list``.

    A destination the fleet wants disabled must show ``D``; one it wants
    routable must not (Kamailio may hold it active, inactive or trying:
    probing decides those). Destinations missing on either side need a
    reload.
    """
    want = {(d.set_id, d.uri): d for d in desired}
    have = {(h.set_id, h.uri): h for h in held}
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} destination(s) missing, first {missing[0][1]}")
        if extra:
            parts.append(f"{len(extra)} unknown destination(s), first {extra[0][1]}")
        return Drift(reload_because="; ".join(parts))
    fixes: list[StateFix] = []
    for key in sorted(want):
        d, h = want[key], have[key]
        if not d.routable and not h.disabled:
            fixes.append(StateFix(DISABLE, d.set_id, d.uri, d.node_id, h.flags))
        elif d.routable and h.disabled:
            fixes.append(StateFix(REPROBE, d.set_id, d.uri, d.node_id, h.flags))
    return Drift(fixes=fixes)
