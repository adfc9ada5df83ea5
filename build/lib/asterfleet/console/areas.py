"""One area of the console: a router plus one entry in the navigation.

The list of areas, in navigation order, is :data:`asterfleet.console.app.AREAS`:
the app is the only module that imports the routers, so this type sits below
them and :mod:`asterfleet.console.state` can name it without a cycle.
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
