"""Times in a calls search: absurd ones are a clear error, never a 500."""

from __future__ import annotations

import pytest

from asterfleet.capture.search import parse_time
from asterfleet.errors import UsageError

NOW_US = 1_764_000_000_000_000


@pytest.mark.parametrize("text", ["inf", "nan", "1e400", "1e15d", "-5m", "", "99999999w"])
def test_an_absurd_time_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="time"):
        parse_time(text, NOW_US)


def test_a_sensible_age_and_an_iso_time() -> None:
    assert parse_time("15m", NOW_US) == NOW_US - 900_000_000
    assert parse_time("2025-01-01T00:00:00", NOW_US) == 1_735_689_600_000_000
