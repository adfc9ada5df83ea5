"""The fleet's address history in the console's database: every view the
monitor publishes opens and closes sightings (see asterfleet.fleet.directory),
and the call pages read them back to name a call's hosts."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import delete, select, update

from asterfleet.capture.search import Party, Tenure
from asterfleet.db import Database, FleetAddress
from asterfleet.errors import UsageError
from asterfleet.fleet.directory import (
    CAPTURE_ID,
    Directory,
    Holder,
    Sighting,
    changes,
    holders,
)
from asterfleet.fleet.view import FleetView


class AddressBook:
    """Keeps ``fleet_addresses`` in step with the views of one cluster; writes
    only when an address changed hands (not on every call count)."""

    def __init__(self, db: Database, cluster: str) -> None:
        self.db = db
        self.cluster = cluster
        self._held: set[Holder] | None = None

    def _open(self) -> set[Holder]:
        q = select(FleetAddress).where(
            FleetAddress.cluster == self.cluster, FleetAddress.until.is_(None)
        )
        with self.db.session() as s:
            return {Holder(a.address, a.kind, a.name) for a in s.scalars(q)}

    def observe(self, view: FleetView, now: float | None = None) -> tuple[int, int]:
        """Record ``view``'s addresses; (sightings closed, sightings opened)."""
        at = time.time() if now is None else now
        if self._held is None:
            self._held = self._open()
        current = holders(view)
        close, open_ = changes(self._held, current)
        if close or open_:
            with self.db.session() as s:
                for h in close:
                    s.execute(
                        update(FleetAddress)
                        .where(
                            FleetAddress.cluster == self.cluster,
                            FleetAddress.address == h.address,
                            FleetAddress.kind == h.kind,
                            FleetAddress.name == h.name,
                            FleetAddress.until.is_(None),
                        )
                        .values(until=at)
                    )
                for h in open_:
                    s.add(
                        FleetAddress(
                            cluster=self.cluster,
                            address=h.address,
                            kind=h.kind,
                            name=h.name,
                            since=at,
                        )
                    )
        self._held = set(current)
        return len(close), len(open_)


def directory(db: Database, cluster: str, addresses: Iterable[str]) -> Directory:
    """The sightings of ``addresses`` (every time), ready for lookups."""
    wanted = sorted(set(addresses))
    if not wanted:
        return Directory([])
    q = select(FleetAddress).where(
        FleetAddress.cluster == cluster, FleetAddress.address.in_(wanted)
    )
    with db.session() as s:
        return Directory(
            Sighting(Holder(a.address, a.kind, a.name), a.since, a.until) for a in s.scalars(q)
        )


def party(db: Database, cluster: str, kind: str, name: str, view: FleetView | None = None) -> Party:
    """Every address ``name`` (a node or balancer id) held, recorded or in
    the current ``view``, with when it held it (:meth:`Directory.tenures`,
    the rule that names the ladder's columns): what a Calls filter by node
    or balancer matches."""
    mine = select(FleetAddress.address).where(
        FleetAddress.cluster == cluster, FleetAddress.kind == kind, FleetAddress.name == name
    )
    with db.session() as s:
        recorded = set(s.scalars(mine))
    current = (
        {h.address for h in holders(view) if h.kind == kind and h.name == name} if view else set()
    )
    if not recorded and not current:
        raise UsageError(
            f"{kind} {name!r}: the fleet has had no {kind} of that name (see the Fleet page)"
        )
    # Every holder's sightings of those addresses: a later holder of one
    # takes it over from its own sighting on.
    book = directory(db, cluster, recorded)
    held: list[tuple[str, Tenure]] = []
    for address in sorted(recorded | current):
        spans = book.tenures(address, kind, name) if address in recorded else []
        if address in current and not spans:
            spans = [(None, None)]  # held now, no history recorded yet
        held += [(address, Tenure(_us(since), _us(until))) for since, until in spans]
    ids = tuple((int(a[len(CAPTURE_ID) :]), t) for a, t in held if a.startswith(CAPTURE_ID))
    addresses = tuple((a, t) for a, t in held if not a.startswith(CAPTURE_ID))
    return Party(name, addresses, ids)


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1_000_000)


def trim(db: Database, cluster: str, before: float) -> int:
    """Delete the sightings that ended before ``before`` (seconds): no call
    kept since then can have been made to those addresses. Open sightings
    stay. The number deleted."""
    with db.session() as s:
        done = s.execute(
            delete(FleetAddress).where(
                FleetAddress.cluster == cluster,
                FleetAddress.until.is_not(None),
                FleetAddress.until < before,
            )
        )
        return int(getattr(done, "rowcount", 0) or 0)
