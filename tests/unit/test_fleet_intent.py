"""How one operator action changes a node's admin record."""

from __future__ import annotations

import pytest

from asterfleet.fleet.actions import apply_change
from asterfleet.fleet.model import AdminIntent

WEIGHTED = AdminIntent(weight=5, note="slow disk", by="bob", at=1.0)
DRAINED = AdminIntent(drain=True, by="alice", at=2.0)


@pytest.mark.parametrize(
    ("current", "note", "changes", "expected"),
    [
        # a drain keeps the weight another writer set
        (WEIGHTED, None, {"drain": True}, AdminIntent(drain=True, weight=5, note="slow disk")),
        # a weight change keeps the drain
        (DRAINED, None, {"weight": 3}, AdminIntent(drain=True, weight=3)),
        # undrain clears maintenance too
        (
            AdminIntent(drain=True, maintenance=True),
            "done",
            {"drain": False, "maintenance": False},
            AdminIntent(note="done"),
        ),
        # no note given: the last one stays
        (WEIGHTED, None, {"weight": None}, AdminIntent(note="slow disk")),
    ],
)
def test_apply_change(
    current: AdminIntent, note: str | None, changes: dict[str, object], expected: AdminIntent
) -> None:
    got = apply_change(current, "rollout:r-1 (ci)", 9.5, note, changes)
    assert got.model_dump(exclude={"by", "at"}) == expected.model_dump(exclude={"by", "at"})
    assert got.by == "rollout:r-1 (ci)"  # the actor exactly as given
    assert got.at == 9.5


def test_apply_change_refuses_an_out_of_range_weight() -> None:
    with pytest.raises(ValueError):
        apply_change(AdminIntent(), "bob", 1.0, None, {"weight": 5000})
