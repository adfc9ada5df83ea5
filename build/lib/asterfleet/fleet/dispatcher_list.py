"""Rendering Kamailio's dispatcher.list from a fleet snapshot.

A pure function: the same snapshot always gives the same bytes, so an
unchanged fleet means no write and no reload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from asterfleet.fleet.model import AdminIntent, EffectiveState, NodeRecord
from asterfleet.fleet.model import effective_state as _effective_state
from asterfleet.fleet.model import effective_weight as _effective_weight
from asterfleet.fleet.weights import normalise

# Dispatcher destination flags (Kamailio dispatcher module).
FLAG_DISABLED = 4  # admin-disabled: no new calls, not probed
FLAG_PROBING = 8  # keep probing with OPTIONS


class Algorithm(StrEnum):
    WEIGHT = "weight"
    LEAST_CALLS = "least-calls"
    ROUND_ROBIN = "round-robin"

    @property
    def kamailio_id(self) -> int:
        return {"weight": 9, "least-calls": 10, "round-robin": 4}[self.value]


@dataclass(frozen=True)
class Destination:
    """One line of dispatcher.list, with the state that produced it."""

    set_id: int
    uri: str
    flags: int
    priority: int
    node_id: str
    state: EffectiveState
    weight: int  # after normalisation for the weight algorithm
    max_calls: int

    @property
    def routable(self) -> bool:
        return self.flags == FLAG_PROBING

    def attrs(self, algorithm: Algorithm) -> str:
        parts = [f"duid={self.node_id}"]
        if algorithm is Algorithm.WEIGHT and self.routable and self.weight > 0:
            parts.append(f"weight={self.weight}")
        if algorithm is Algorithm.LEAST_CALLS:
            # maxload 0 would mean "never": give unlimited boxes a large cap.
            parts.append(f"maxload={self.max_calls or 100000}")
        return ";".join(parts)

    def line(self, algorithm: Algorithm) -> str:
        return f"{self.set_id} {self.uri} {self.flags} {self.priority} {self.attrs(algorithm)}"


def plan(
    nodes: Iterable[NodeRecord],
    intents: dict[str, AdminIntent],
    algorithm: Algorithm,
) -> list[Destination]:
    """Destinations for every node, in the order they are written to the file.

    What the real Kamailio 5.6 does, and why the order matters:

    * it sorts a set by priority, highest first, and for equal priorities
      uses the *reverse* of the file order;
    * with algorithm 9, a destination without a usable weight that comes
      first internally switches weighting off for the whole set, and the
      share of a disabled destination spills onto its neighbour.

    So disabled destinations carry no weight, never a priority above the
    set's lowest routable one, and are written before the routable ones of
    the same priority (which puts them last internally). An operator weight
    of 0 means "no new calls", like a drain, whatever the algorithm.
    """
    # One pass to decide each node, one to share the weights, one to build.
    rows: list[tuple[NodeRecord, EffectiveState, int, bool]] = []
    by_set: dict[int, dict[str, int]] = {}
    lowest_routable: dict[int, int] = {}
    for node in nodes:
        intent = intents.get(node.id)
        state = _effective_state(node, intent)
        weight = _effective_weight(node, intent)
        live = state is EffectiveState.ACTIVE and weight > 0
        rows.append((node, state, weight, live))
        by_set.setdefault(node.set, {})[node.id] = weight if live else 0
        if live:
            low = lowest_routable.get(node.set, node.priority)
            lowest_routable[node.set] = min(low, node.priority)
    shares: dict[tuple[int, str], int] = {}
    for set_id, weights in by_set.items():
        for node_id, pct in normalise(weights).items():
            shares[(set_id, node_id)] = pct

    dests: list[Destination] = []
    for node, state, _weight, live in rows:
        priority = node.priority
        if not live and node.set in lowest_routable:
            priority = min(priority, lowest_routable[node.set])
        dests.append(
            Destination(
                set_id=node.set,
                uri=node.sip_uri,
                flags=FLAG_PROBING if live else FLAG_DISABLED,
                priority=priority,
                node_id=node.id,
                state=state,
                weight=shares[(node.set, node.id)],
                max_calls=node.max_calls,
            )
        )
    # Weightless destinations first within a priority (last, inside Kamailio).
    dests.sort(key=lambda d: (d.set_id, -d.priority, d.routable and d.weight > 0, d.node_id))
    return dests


HEADER = (
    "# dispatcher.list rendered by asterfleet: do not edit, it is rewritten\n"
    "# from etcd on every change. Columns: set uri flags priority attrs\n"
    "# flags 8 = probing (takes calls), 4 = disabled (draining, maintenance,\n"
    "# unhealthy or starting: no new calls, in-dialog requests still routed).\n"
)


WEIGHT_SLOTS = 100


def weight_overflow(dests: list[Destination], algorithm: Algorithm) -> list[str]:
    """Sets with more routable nodes than the weight algorithm can address."""
    if algorithm is not Algorithm.WEIGHT:
        return []
    counts: dict[int, int] = {}
    for d in dests:
        if d.routable:
            counts[d.set_id] = counts.get(d.set_id, 0) + 1
    return [
        f"set {set_id} has {n} routable nodes but the weight algorithm addresses at most "
        f"{WEIGHT_SLOTS}: {n - WEIGHT_SLOTS} get no share of new calls (only failover); "
        "use --algorithm least-calls or round-robin, or split the nodes into sets"
        for set_id, n in sorted(counts.items())
        if n > WEIGHT_SLOTS
    ]


def render(dests: list[Destination], algorithm: Algorithm) -> str:
    """The complete dispatcher.list text."""
    body = "".join(d.line(algorithm) + "\n" for d in dests)
    return HEADER + f"# algorithm: {algorithm.value}\n" + body


def list_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
