"""Webhook deliveries from GitHub, Gitea/Forgejo and GitLab, and polling."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterfleet.factory.polling import changed_refs, is_due, parse_ls_remote
from asterfleet.factory.triggers import Delivery, WebhookError, parse, verify

SECRET = "hook-secret"
SHA = "a" * 40
BODY = json.dumps({"ref": "refs/heads/main", "after": SHA}).encode()


def _sig(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


GITHUB = {
    "X-GitHub-Event": "push",
    "X-GitHub-Delivery": "gh-1",
    "X-Hub-Signature-256": "sha256=" + _sig(BODY),
}
GITEA = {
    "X-Gitea-Event": "push",
    "X-Gitea-Delivery": "gt-1",
    "X-Gitea-Signature": _sig(BODY),
    "X-GitHub-Event": "push",
}
GITLAB = {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "gl-1", "X-Gitlab-Token": SECRET}


@pytest.mark.parametrize(
    ("headers", "provider", "delivery"),
    [(GITHUB, "github", "gh-1"), (GITEA, "gitea", "gt-1"), (GITLAB, "gitlab", "gl-1")],
)
def test_verified_push(headers: dict[str, str], provider: str, delivery: str) -> None:
    assert verify(headers, BODY, SECRET) == provider
    assert parse(verify(headers, BODY, SECRET), headers, BODY) == Delivery(
        provider,
        delivery,
        headers.get("X-Gitlab-Event") or "push",
        "refs/heads/main",
        SHA,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "headers",
    [
        {**GITHUB, "X-Hub-Signature-256": "sha256=" + _sig(BODY, "other")},
        {k: v for k, v in GITHUB.items() if k != "X-Hub-Signature-256"},
        {**GITEA, "X-Gitea-Signature": "00"},
        {**GITLAB, "X-Gitlab-Token": "guess"},
    ],
)
def test_bad_signatures_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookError) as info:
        verify(headers, BODY, SECRET)
    assert info.value.status == 401


def test_unknown_sender_and_body_checks() -> None:
    with pytest.raises(WebhookError):
        verify({"X-Other": "1"}, BODY, SECRET)
    with pytest.raises(WebhookError):
        parse("github", GITHUB, b"not json")


@pytest.mark.parametrize(
    ("payload", "event", "ref"),
    [
        ({"ref": "refs/heads/main", "after": "0" * 40, "deleted": True}, "push", None),
        ({"zen": "hi"}, "ping", None),
        ({"ref": "refs/tags/v1", "checkout_sha": SHA}, "Tag Push Hook", "refs/tags/v1"),
    ],
)
def test_non_builds(payload: dict[str, object], event: str, ref: str | None) -> None:
    body = json.dumps(payload).encode()
    provider = "gitlab" if " " in event else "github"
    key = "X-Gitlab-Event" if provider == "gitlab" else "X-GitHub-Event"
    assert parse(provider, {key: event}, body).ref == ref  # type: ignore[arg-type]


def test_delivery_without_id_is_identified_by_its_body() -> None:
    a = parse("github", {"X-GitHub-Event": "push"}, BODY)
    assert a.delivery_id == parse("github", {"X-GitHub-Event": "push"}, BODY).delivery_id
    assert a.delivery_id.startswith("sha256:")


@given(st.binary(max_size=200))
def test_parse_never_crashes_unexpectedly(body: bytes) -> None:
    with contextlib.suppress(WebhookError):
        parse("github", GITHUB, body)


LS_REMOTE = f"""{"1" * 40}\tHEAD
{"2" * 40}\trefs/heads/main
{"3" * 40}\trefs/tags/v1
{"4" * 40}\trefs/tags/v1^{{}}
garbage line
{"5" * 40}\trefs/tags/v2
"""


def test_parse_ls_remote_peels_annotated_tags() -> None:
    assert parse_ls_remote(LS_REMOTE) == {
        "refs/heads/main": "2" * 40,
        "refs/tags/v1": "4" * 40,
        "refs/tags/v2": "5" * 40,
    }


def test_changed_refs_and_due() -> None:
    assert changed_refs({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == {
        "b": "3",
        "c": "4",
    }
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert is_due(None, 60, now)
    assert not is_due(now - dt.timedelta(seconds=30), 60, now)
    assert is_due(now - dt.timedelta(seconds=60), 60, now)
