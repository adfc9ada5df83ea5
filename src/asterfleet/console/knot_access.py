"""Who may add, edit and remove knots in the console.

The knots pages (:mod:`asterfleet.console.builds`) and the forms and API that
change knots (:mod:`asterfleet.console.knot_admin`) ask the same questions, so
the answers live here, below both routers.
"""

from __future__ import annotations

from asterfleet.console.security import Principal
from asterfleet.factory.knot import Knot


def may_add(user: Principal) -> bool:
    """Operators and admins with write access add knots."""
    return user.can_act


def may_edit(user: Principal, knot: Knot) -> bool:
    """Edit and remove: admins and the knot's owners, with write access."""
    return "write" in user.scopes and (user.role == "admin" or user.username in knot.owners)
