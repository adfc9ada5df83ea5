"""Who may add, edit and remove knots in the console.

The knots pages (:mod:`asterfleet.console.builds`) and the forms and API that
change knots (:mod:`asterfleet.console.knot_admin`) ask the same questions, so
the answers live here, below both routers.
"""

from __future__ import annotations

import dataclasses

from asterfleet.console.factory_state import FactoryState
from asterfleet.console.security import Principal
from asterfleet.factory.knot import Knot


def may_see(fs: FactoryState, user: Principal, knot: Knot) -> bool:
    """A knot and its builds (logs, source URL, arguments) are shown to
    admins, its owners, and whoever may pull its image repository."""
    if user.role == "admin" or user.username in knot.owners:
        return True
    # The user's own rights: a read-only token still shows what its user may pull.
    return fs.ownership.may(dataclasses.replace(user, token_id=None), knot.repository, "pull")


def may_add(user: Principal) -> bool:
    """Operators and admins with write access add knots."""
    return user.can_act


def may_edit(user: Principal, knot: Knot) -> bool:
    """Edit and remove: admins and the knot's owners, with write access."""
    return "write" in user.scopes and (user.role == "admin" or user.username in knot.owners)
