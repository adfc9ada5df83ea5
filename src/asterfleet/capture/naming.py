"""A call's hosts named after the fleet: ``caller``, ``lb1``, ``ast2`` (pure).

The capture layer knows addresses and capture hosts only; who held an
address at the call's time is the caller's business (the console reads the
fleet's address history, see asterfleet.fleet.directory) and arrives here as
two look-ups:

- ``by_address``: a node or balancer that held this ``host:port`` or IP;
- ``by_capture_id``: the balancer whose Kamailio sends this HEP capture id.

The rules, in order (the first that names an address wins):

1. an address a node (or balancer) published exactly (``host:port``);
2. the address a capture host owns (see :func:`flow.column_names`): the
   balancer of its capture id, else the capture host's own name (Asterisk
   sends its node id as ``capture_name``);
3. an address whose IP a balancer published (``--sip-address`` has no
   port), unless that balancer already names another column: on one IP
   the caller would otherwise be taken for the balancer;
4. a capture host's name for the one address of its captures left unnamed
   (Asterisk sees only the balancer and itself: once the balancer is named,
   the other address is its own);
5. ``caller`` for the sender of the call's first request.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from asterfleet.capture.flow import capture_host_addresses, column_names, unalias
from asterfleet.capture.store import Message

CALLER = "caller"
Lookup = Callable[[str], str | None]


def _ip(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def fleet_names(
    msgs: Sequence[Message], by_address: Lookup, by_capture_id: Lookup
) -> dict[str, str]:
    """Address -> name for the hosts of one call (addresses as the flow
    spells them, see flow.unalias); unnamed addresses are left out."""
    ordered = sorted(unalias(msgs), key=lambda m: (m.ts_us, m.id))
    addresses = list(dict.fromkeys(a for m in ordered for a in (m.src, m.dst)))
    owned = {a: h for a, h in column_names(ordered).items() if h != CALLER}
    names: dict[str, str] = {}
    for a in addresses:
        found = by_address(a)
        if found:
            names[a] = found
    for a, host in owned.items():
        if a not in names:
            names[a] = (by_capture_id(host) if host.isdigit() else None) or host
    for a in addresses:
        if a not in names:
            found = by_address(_ip(a))
            if found and found not in names.values():
                names[a] = found
    for host, own in capture_host_addresses(ordered).items():
        left = own - names.keys()
        if len(left) == 1 and host not in names.values() and not host.isdigit():
            names[left.pop()] = host
    first = next((m for m in ordered if m.method is not None and m.src not in names), None)
    if first is not None and CALLER not in names.values():
        names[first.src] = CALLER
    return names
