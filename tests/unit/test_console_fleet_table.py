"""The Fleet page's table at scale: filters, sorting, paging, counts (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from asterfleet.console.fleet_table import FleetQuery, row_version, select
from asterfleet.errors import UsageError


def row(node_id: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": node_id,
        "set": 1,
        "sip_uri": f"sip:10.0.0.1:{5000 + int(node_id[1:])}",
        "state": "active",
        "agent_state": "active",
        "operator": "-",
        "weight": 1,
        "active_calls": 0,
        "version": "22.1.0",
        "labels": {},
        "started_at": 100.0,
        "age_seconds": 5.0,
        "intent": None,
    }
    return {**base, **kw}


FLEET = [
    row("n1", state="drained", active_calls=0, labels={"rack": "r1"}),
    row("n2", set=2, weight=5, active_calls=7, labels={"rack": "r2"}),
    row("n3", state="unhealthy", active_calls=None, version="21.0.0"),
    row("n4", state="drained", intent={"by": "root@cli", "note": "disk swap"}),
    row("n5", set=2, weight=3, active_calls=2, started_at=50.0),
]


@pytest.mark.parametrize(
    ("params", "ids"),
    [
        ({}, ["n1", "n2", "n3", "n4", "n5"]),
        ({"state": "drained"}, ["n1", "n4"]),  # a count's link
        ({"set": "2"}, ["n2", "n5"]),
        ({"label": "rack"}, ["n1", "n2"]),  # has the label
        ({"label": "rack=r2"}, ["n2"]),
        ({"q": "21.0"}, ["n3"]),  # text: the version
        ({"q": "DISK"}, ["n4"]),  # text: the operator's note, any case
        ({"sort": "weight", "desc": "1"}, ["n2", "n5", "n4", "n3", "n1"]),
        ({"sort": "calls"}, ["n3", "n1", "n4", "n5", "n2"]),  # unknown call counts first
        ({"sort": "age", "desc": "1"}, ["n5", "n4", "n3", "n2", "n1"]),  # oldest first
        ({"size": "25", "page": "9"}, ["n1", "n2", "n3", "n4", "n5"]),  # past the end: last page
    ],
)
def test_filters_and_sorting(params: dict[str, str], ids: list[str]) -> None:
    page = select(FLEET, FleetQuery.from_params(params))
    assert [r["id"] for r in page.rows] == ids


def test_pages_and_counts_at_fleet_scale() -> None:
    fleet = [row(f"n{i}", state="drained" if i % 10 == 0 else "active") for i in range(1, 5001)]
    page = select(fleet, FleetQuery.from_params({"size": "100", "page": "3"}))
    assert len(page.rows) == 100 and page.pages == 50 and page.query.page == 3
    assert page.rows[0]["id"] == sorted(r["id"] for r in fleet)[200]
    assert page.counts == {"active": 4500, "drained": 500} and page.total == 5000
    only = select(fleet, FleetQuery.from_params({"state": "drained"}))
    # The counts still show every state, so another one can be clicked.
    assert only.matching == 500 and only.counts == page.counts


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "colour"}, "sort by one of"),
        ({"size": "7"}, "size=7"),
        ({"page": "two"}, "whole numbers"),
    ],
)
def test_bad_parameters_are_named(params: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        FleetQuery.from_params(params)


def test_urls_keep_the_other_filters() -> None:
    q = FleetQuery.from_params({"state": "drained", "q": "ast", "sort": "calls"})
    assert q.url(page=2) == "/fleet?state=drained&q=ast&sort=calls&page=2"
    assert q.sort_url("calls") == "/fleet?state=drained&q=ast&sort=calls&desc=1"
    assert q.sort_url("weight") == "/fleet?state=drained&q=ast&sort=weight"


def test_a_row_version_ignores_the_ticking_age() -> None:
    a = row("n1")
    assert row_version(a) == row_version({**a, "age_seconds": 99.0})
    assert row_version(a) != row_version({**a, "active_calls": 1})
