"""Knot validation, which refs a knot builds, and which tags a build gets."""

from __future__ import annotations

from typing import Any

import pytest

from asterfleet.errors import UsageError
from asterfleet.factory.knot import (
    build_targets,
    dockerfile_stages,
    tags_for,
    validate_knot,
    wants_ref,
)

BASE: dict[str, Any] = {"name": "app", "git_url": "/srv/git/app", "repository": "alice/app"}
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad_Name"}, "knot name"),
        ({"repository": "app"}, "knot repository"),
        ({"repository": "Alice/App"}, "knot repository"),
        ({"dockerfile": "../Dockerfile"}, "knot dockerfile"),
        ({"context": "/abs"}, "knot context"),
        ({"build_args": {"1x": "y"}}, "knot build_args"),
        ({"test_command": "echo 'unclosed"}, "knot test_command"),
        ({"branch": None, "tag_pattern": None}, "branch, a tag pattern"),
        ({"tag_rules": [{"kind": "branch", "tag": "{nope}"}]}, "tag_rules"),
        # Only plain fields: no padding (a huge string in the worker), no
        # attribute or index access (a way into Python objects), no conversion.
        ({"tag_rules": [{"kind": "branch", "tag": "{name:>999999999}"}]}, "plain field"),
        ({"tag_rules": [{"kind": "branch", "tag": "{name.__class__}"}]}, "plain field"),
        ({"tag_rules": [{"kind": "branch", "tag": "{name[0]}"}]}, "plain field"),
        ({"tag_rules": [{"kind": "branch", "tag": "{name!r}"}]}, "plain field"),
        ({"tag_rules": [{"kind": "branch", "tag": "{}"}]}, "plain field"),
        ({"tag_rules": [{"kind": "branch", "tag": "v{name"}]}, "tag_rules"),
        ({"triggers": {"git_poll_seconds": 1}}, "knot triggers.git_poll_seconds"),
        ({"triggers": {"url": "ftp://x"}}, "knot triggers.url"),
        ({"colour": "red"}, "knot colour"),
    ],
)
def test_validation_names_the_bad_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate_knot({**BASE, **change})


@pytest.mark.parametrize(
    ("knot", "ref", "wanted"),
    [
        ({}, "refs/heads/main", True),
        ({}, "refs/heads/dev", False),
        ({}, "refs/tags/v1.0", False),
        ({"tag_pattern": "v*"}, "refs/tags/v1.0", True),
        ({"tag_pattern": "v*"}, "refs/tags/release-1", False),
        ({"branch": None, "tag_pattern": "*"}, "refs/heads/main", False),
        ({}, "refs/pull/1/head", False),
    ],
)
def test_wants_ref(knot: dict[str, Any], ref: str, wanted: bool) -> None:
    assert wants_ref(validate_knot({**BASE, **knot}), ref) is wanted


@pytest.mark.parametrize(
    ("knot", "ref", "tags"),
    [
        ({}, "refs/heads/main", ["main", "latest"]),
        ({"latest": False}, "refs/heads/main", ["main"]),
        ({"branch": "feature/x"}, "refs/heads/feature/x", ["feature-x", "latest"]),
        ({"sha_tag": True}, "refs/heads/main", ["main", "latest", SHA[:12]]),
        ({}, "refs/tags/v1.2.3", ["v1.2.3"]),
        (
            {
                "tag_rules": [
                    {"kind": "tag", "match": "v*", "tag": "{version}"},
                    {"kind": "branch", "match": "main", "tag": "edge"},
                ]
            },
            "refs/tags/v1.2.3",
            ["1.2.3"],
        ),
        (
            {"tag_rules": [{"kind": "branch", "match": "main", "tag": "edge-{short_sha}"}]},
            "refs/heads/main",
            [f"edge-{SHA[:12]}", "latest"],
        ),
        ({"tag_rules": [{"kind": "tag", "match": "v*"}]}, "refs/heads/main", ["latest"]),
    ],
)
def test_tags_for(knot: dict[str, Any], ref: str, tags: list[str]) -> None:
    assert tags_for(validate_knot({**BASE, **knot}), ref, SHA) == tags


@pytest.mark.parametrize(
    ("dockerfile", "stages", "targets"),
    [
        ("FROM scratch\nCOPY a /a\n", ["0"], (None, None)),
        (
            "FROM scratch AS build\nFROM build AS test\nRUN true\nFROM build AS final\n",
            ["build", "test", "final"],
            ("test", None),
        ),
        ("FROM scratch AS app\nFROM app AS TEST\nRUN true\n", ["app", "test"], ("test", "app")),
        (
            "FROM --platform=linux/amd64 scratch \\\n  AS base\nFROM base\n",
            ["base", "1"],
            (None, None),
        ),
    ],
)
def test_dockerfile_test_stage(
    dockerfile: str, stages: list[str], targets: tuple[str | None, str | None]
) -> None:
    assert dockerfile_stages(dockerfile) == stages
    assert build_targets(dockerfile) == targets
