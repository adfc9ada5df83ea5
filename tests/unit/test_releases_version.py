"""Asterisk version numbers: what parses, how they order, which branch."""

from __future__ import annotations

import itertools

import pytest

from asterfleet.errors import UsageError
from asterfleet.releases.version import check_branch, newest, parse_version, version


@pytest.mark.parametrize(
    ("text", "canonical", "branch", "prerelease"),
    [
        ("22.1.0", "22.1.0", "22", False),
        ("20.10.2", "20.10.2", "20", False),
        ("22.1.0-rc1", "22.1.0-rc1", "22", True),
        ("22.0.0-pre1", "22.0.0-pre1", "22", True),
        ("certified-20.7-cert1", "certified-20.7-cert1", "certified-20.7", False),
        ("certified/18.9-cert5", "certified-18.9-cert5", "certified-18.9", False),
        ("certified-20.7-cert11-rc1", "certified-20.7-cert11-rc1", "certified-20.7", True),
        (" 22.1.0\n", "22.1.0", "22", False),
    ],
)
def test_versions_parse(text: str, canonical: str, branch: str, prerelease: bool) -> None:
    v = parse_version(text)
    assert v is not None
    assert (str(v), v.branch, v.prerelease) == (canonical, branch, prerelease)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "22",
        "22.1",
        "20.7-cert1",
        "certified-20.7",
        "certified-20.7.1-cert1",
        "22.1.0-beta1",
        "22-current",
        "v22.1.0",
        "22.1.0.1",
    ],
)
def test_not_versions(text: str) -> None:
    assert parse_version(text) is None
    with pytest.raises(UsageError, match="is not an Asterisk version"):
        version(text, "--version")


# Each list is in ascending order.
@pytest.mark.parametrize(
    "ordered",
    [
        ["22.0.0-pre1", "22.0.0-rc1", "22.0.0-rc2", "22.0.0", "22.0.1", "22.1.0"],
        ["20.9.0", "20.10.0-rc1", "20.10.0", "22.1.0"],  # numeric, not lexical
        ["22.9.3", "22.10.0"],
        [
            "certified-20.7-cert2",
            "certified-20.7-cert10",
            "certified-20.7-cert11-rc1",
            "certified-20.7-cert11",
        ],
        ["certified-18.9-cert11", "certified-20.7-cert1"],
    ],
)
def test_ordering(ordered: list[str]) -> None:
    parsed = [version(t) for t in ordered]
    shuffled = parsed[::-1]
    assert [str(v) for v in sorted(shuffled)] == ordered
    for a, b in itertools.pairwise(parsed):
        assert a < b and b > a and a <= b and not b <= a and a != b


@pytest.mark.parametrize(
    ("branch", "prereleases", "expected"),
    [
        ("22", False, "22.10.0"),
        ("22", True, "22.11.0-rc1"),
        ("20", False, "20.9.0"),
        ("certified-20.7", False, "certified-20.7-cert10"),
        ("21", False, None),
    ],
)
def test_newest_per_branch(branch: str, prereleases: bool, expected: str | None) -> None:
    texts = [
        "22.9.3",
        "22.10.0",
        "22.11.0-rc1",
        "20.9.0",
        "20.8.1",
        "certified-20.7-cert2",
        "certified-20.7-cert10",
    ]
    versions = [v for v in map(parse_version, texts) if v is not None]
    best = newest(versions, branch, prereleases=prereleases)
    assert (str(best) if best else None) == expected


@pytest.mark.parametrize("text", ["22", "20", "certified-20.7"])
def test_branches(text: str) -> None:
    assert check_branch(text) == text


@pytest.mark.parametrize("text", ["22.1", "certified-20", "certified/20.7", "main", ""])
def test_bad_branches(text: str) -> None:
    with pytest.raises(UsageError, match="is not an Asterisk branch"):
        check_branch(text, "branch")
