"""Who held which address when: the fleet's address history (pure).

A call's captured messages carry addresses (``10.0.0.5:5060``) and, from
Kamailio, only a HEP capture id. To name the columns of its ladder after the
fleet (``lb1``, ``ast2``) the console keeps, for every address a node or a
balancer published in etcd, the interval during which it held it: a
:class:`Sighting`. Its records give three kinds of address (:class:`Holder`):

- a node's SIP ``host:port`` (from its ``sip_uri``);
- a balancer's SIP address (an IP without port: ``--sip-address``);
- a balancer's capture id, as ``capture-id:N`` (``--capture-id``).

:func:`holders` reads them from one view of the fleet; :func:`changes`
says which sightings a new view opens and closes; :class:`Directory`
answers "who held this address at that time". An address reused by another
node later (a box replaced) names the holder of the time asked about.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from asterfleet.fleet.view import FleetView

NODE = "node"
BALANCER = "balancer"
CAPTURE_ID = "capture-id:"
#: ``(since, until)`` in seconds since the epoch; None: unbounded on that side.
Span = tuple[float | None, float | None]


def sip_hostport(sip_uri: str) -> str:
    """``sip:10.0.0.5:5060;transport=udp`` -> ``10.0.0.5:5060`` (the address
    capture records for the node); port 5060 when the URI has none."""
    rest = sip_uri.split(":", 1)[1].split(";", 1)[0]
    host, sep, port = rest.rpartition(":")
    if sep and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return rest
    return f"{rest}:5060"


def capture_key(capture_id: int | str) -> str:
    """The directory's address for a HEP capture id."""
    return f"{CAPTURE_ID}{capture_id}"


@dataclass(frozen=True, order=True)
class Holder:
    """``name`` (a node or balancer id, of ``kind``) holds ``address``."""

    address: str
    kind: str
    name: str


@dataclass(frozen=True)
class Sighting:
    holder: Holder
    since: float  # seconds since the epoch
    until: float | None = None  # None: still held


def holders(view: FleetView) -> frozenset[Holder]:
    """Every address the fleet's records name, with who holds it."""
    out: set[Holder] = set()
    for node in view.nodes:
        out.add(Holder(sip_hostport(node.record.sip_uri), NODE, node.id))
    for lb in view.balancers:
        out.update(Holder(a, BALANCER, lb.id) for a in lb.sip_addresses)
        if lb.capture_id is not None:
            out.add(Holder(capture_key(lb.capture_id), BALANCER, lb.id))
    return frozenset(out)


def changes(held: Iterable[Holder], now: Iterable[Holder]) -> tuple[list[Holder], list[Holder]]:
    """(sightings to close, sightings to open), each sorted: what takes the
    open sightings ``held`` to the holders of the view ``now``."""
    before, after = set(held), set(now)
    return sorted(before - after), sorted(after - before)


class Directory:
    """Look addresses up in a set of sightings, at a time."""

    def __init__(self, sightings: Iterable[Sighting]) -> None:
        self._by_address: dict[str, list[Sighting]] = {}
        for s in sorted(sightings, key=lambda s: s.since):
            self._by_address.setdefault(s.holder.address, []).append(s)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_address.values())

    def sightings(self) -> list[Sighting]:
        return [s for seen in self._by_address.values() for s in seen]

    def holder(self, address: str, at: float) -> Holder | None:
        """Who held ``address`` at ``at``: the sighting that covers the time;
        else the last one that ended before it (the records of a node that
        left may be gone before its calls are read); else the first that
        began after it (the console started watching after the call)."""
        seen = self._by_address.get(address)
        if not seen:
            return None
        covering = [s for s in seen if s.since <= at and (s.until is None or at <= s.until)]
        if covering:
            return covering[-1].holder
        before = [s for s in seen if s.since <= at]
        if before:
            return before[-1].holder
        return seen[0].holder

    def name(self, address: str, at: float) -> str | None:
        found = self.holder(address, at)
        return found.name if found else None

    def tenures(
        self, address: str, kind: str, name: str
    ) -> list[tuple[float | None, float | None]]:
        """When :meth:`holder` names ``name`` (of ``kind``) for ``address``:
        ``(since, until)`` intervals in seconds, None where unbounded. What
        a search by node or balancer matches, so that it agrees with the
        names the ladder and the Calls list give (an address a replaced box
        held goes to its successor from the successor's sighting on)."""
        seen = self._by_address.get(address, [])
        # The holder can only change at a sighting's start or end.
        edges = sorted({s.since for s in seen} | {s.until for s in seen if s.until is not None})
        if not edges:
            return []
        bounds: list[float | None] = [None, *edges, None]
        out: list[Span] = []
        for low, high in itertools.pairwise(bounds):
            if low is None:
                probe = edges[0] - 1.0
            elif high is None:
                probe = edges[-1] + 1.0
            else:
                probe = (low + high) / 2
            h = self.holder(address, probe)
            if h is None or (h.kind, h.name) != (kind, name):
                continue
            if out and out[-1][1] == low:
                out[-1] = (out[-1][0], high)  # the same holder goes on
            else:
                out.append((low, high))
        return out
