"""Catalogue parsing: notification envelopes, manifests and configs."""

from __future__ import annotations

import datetime as dt

import pytest

from asterfleet.registry.catalogue import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    describe_manifest,
    parse_created,
    pull_command,
    repositories_in_notification,
)


def test_notifications_name_pushed_and_deleted_repositories() -> None:
    envelope = {
        "events": [
            {"action": "push", "target": {"repository": "alice/app", "tag": "1"}},
            {"action": "pull", "target": {"repository": "bob/app"}},
            {"action": "delete", "target": {"repository": "carol/x"}},
            {"action": "push", "target": {"repository": "Bad Name"}},
            {"action": "push"},
            "junk",
        ]
    }
    assert repositories_in_notification(envelope) == {"alice/app", "carol/x"}
    assert repositories_in_notification({"events": "nope"}) == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02T03:04:05Z", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
        ("2026-01-02T03:04:05.123456789Z", dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)),
        ("2026-01-02T03:04:05.5+02:00", dt.datetime(2026, 1, 2, 1, 4, 5, 500000, tzinfo=dt.UTC)),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_created(text: object, expected: dt.datetime | None) -> None:
    assert parse_created(text) == expected


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_image_manifest(media_type: str) -> None:
    manifest = {
        "config": {"digest": "sha256:c", "size": 100},
        "layers": [
            {"digest": "sha256:l1", "size": 1000, "mediaType": "x"},
            {"digest": "sha256:l2", "size": 10, "mediaType": "y"},
        ],
    }
    config = {
        "created": "2026-01-02T03:04:05Z",
        "os": "linux",
        "architecture": "arm64",
        "variant": "v8",
    }
    rec = describe_manifest("a/b", "1", "sha256:m", media_type, manifest, config)
    assert rec.size == 1110 and rec.platforms == ("linux/arm64/v8",)
    assert [la["digest"] for la in rec.layers] == ["sha256:l1", "sha256:l2"]
    assert rec.created == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_index_lists_platforms() -> None:
    index = {
        "manifests": [
            {"size": 500, "platform": {"os": "linux", "architecture": "amd64"}},
            {"size": 400, "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }
    rec = describe_manifest("a/b", "1", "sha256:i", OCI_INDEX, index, None)
    assert rec.platforms == ("linux/amd64", "linux/arm64") and rec.size == 900


def test_pull_command() -> None:
    assert pull_command("reg:5000", "a/b", "1") == "docker pull reg:5000/a/b:1"
