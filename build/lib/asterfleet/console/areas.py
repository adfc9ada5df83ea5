"""The console's areas: each is a router plus one entry in the navigation.

Adding an area (the Calls page, the Images page) is one :class:`Area` in
:data:`AREAS` and its router module; the base template lists them in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter


@dataclass(frozen=True)
class Area:
    name: str  # also the key templates use to mark the current page
    title: str  # shown in the navigation
    path: str  # where the navigation links to
    router: APIRouter
    in_nav: bool = True


def areas() -> list[Area]:
    """Every area, in navigation order (imported late: routers import templates)."""
    from asterfleet.console.balancers import router as balancers
    from asterfleet.console.builds import router as builds
    from asterfleet.console.calls import router as calls
    from asterfleet.console.events import router as events
    from asterfleet.console.fleet import router as fleet
    from asterfleet.console.images import router as images
    from asterfleet.console.knot_admin import router as knot_admin

    return [
        Area("fleet", "Fleet", "/fleet", fleet),
        Area("balancers", "Balancers", "/balancers", balancers),
        Area("events", "Events", "/events", events),
        Area("calls", "Calls", "/calls", calls),
        Area("images", "Images", "/images", images),
        # Adding, editing, removing knots: before "knots" so /knots/new is not a knot.
        Area("knot_admin", "Add knot", "/knots/new", knot_admin, in_nav=False),
        Area("knots", "Builds", "/knots", builds),
    ]
