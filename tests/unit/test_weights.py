"""Relative weights become Kamailio percentages (largest remainder)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterfleet.fleet.weights import normalise


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"a": 1, "b": 2, "c": 1}, {"a": 25, "b": 50, "c": 25}),
        ({"a": 1, "b": 1, "c": 1}, {"a": 34, "b": 33, "c": 33}),
        ({"a": 1, "b": 99}, {"a": 1, "b": 99}),
        ({"a": 1, "b": 1000}, {"a": 1, "b": 99}),  # never rounded away
        ({"a": 0, "b": 5}, {"a": 0, "b": 100}),
        ({"a": 0, "b": 0}, {"a": 0, "b": 0}),
        ({}, {}),
        ({"only": 7}, {"only": 100}),
        ({"a": 3, "b": 3, "c": 3, "d": 1}, {"a": 30, "b": 30, "c": 30, "d": 10}),
    ],
)
def test_normalise_table(weights: dict[str, int], expected: dict[str, int]) -> None:
    assert normalise(weights) == expected


def test_negative_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        normalise({"a": -1})


def test_more_than_100_positive_weights_share_the_100_slots_without_failing() -> None:
    out = normalise({f"{i:03d}": 1 for i in range(101)})
    assert sum(out.values()) == 100
    assert sorted(out.values()).count(0) == 1


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers(0, 1000), max_size=100))
def test_normalise_properties(weights: dict[str, int]) -> None:
    out = normalise(weights)
    assert out.keys() == weights.keys()
    positive = [k for k, w in weights.items() if w > 0]
    assert sum(out.values()) == (100 if positive else 0)
    for k, w in weights.items():
        assert (out[k] >= 1) if w > 0 else (out[k] == 0)
    # Deterministic: equal input, equal output.
    assert normalise(dict(reversed(list(weights.items())))) == out
