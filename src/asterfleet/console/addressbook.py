"""The fleet's address history in the console's database: every view the
monitor publishes opens and closes sightings (see asterfleet.fleet.directory),
and the call pages read them back to name a call's hosts."""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import select, update

from asterfleet.db import Database, FleetAddress
from asterfleet.fleet.directory import Directory, Holder, Sighting, changes, holders
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
