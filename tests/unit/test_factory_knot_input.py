"""A knot as typed (CLI flags, console form fields): git URLs, tag rules, build
args, errors per field, and the write-only webhook secret."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterfleet.errors import UsageError
from asterfleet.factory import triggers
from asterfleet.factory.knot import KnotInvalid, check_git_url
from asterfleet.factory.knot_input import (
    GENERATE,
    MASK,
    KnotInput,
    parse_tag_rule,
    public_spec,
    resolve_webhook_secret,
    to_input,
    validate_input,
)


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example/team/app.git",
        "http://127.0.0.1:3000/alice/app",
        "ssh://git@git.example:2222/team/app.git",
        "git://git.example/app",
        "file:///srv/git/app",
        "git@github.com:team/app.git",
        "/srv/git/app",
    ],
)
def test_git_urls_git_can_clone_are_accepted(url: str) -> None:
    assert check_git_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ext::sh -c touch% /tmp/pwned",
        "fd::3",
        "--upload-pack=touch /tmp/x",
        "-oProxyCommand=x",
        "ftp://git.example/app",
        "https:///no-host",
        "relative/path",
        "https://git.example/a b",
        "https://git.example/a\nb",
    ],
)
def test_git_urls_that_are_unsafe_or_not_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        check_git_url(url)


@given(st.text(max_size=80))
def test_check_git_url_only_ever_accepts_or_raises_value_error(url: str) -> None:
    try:
        assert check_git_url(url) == url
    except ValueError:
        return
    assert not url.startswith("-") and "::" not in url


@given(st.text(max_size=60))
def test_tag_rules_parse_or_fail_with_a_usage_error(text: str) -> None:
    try:
        rule = parse_tag_rule(text)
    except UsageError as exc:
        assert "tag-rule" in str(exc)
    else:
        assert rule["kind"] in ("branch", "tag")


def form(**fields: object) -> KnotInput:
    base = KnotInput(name="app", git_url="/srv/app", repository="alice/app")
    for key, value in fields.items():
        setattr(base, key, value)
    return base


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"git_url": "ext::x"}, {"git_url"}),
        ({"name": "new"}, {"name"}),
        ({"build_args": ["A=1", "novalue"]}, {"build_args"}),
        ({"build_args": ["1A=x"]}, {"build_args"}),
        ({"tag_rules": ["branch:*={nope}"]}, {"tag_rules"}),
        ({"tag_rules": ["main=stable"]}, {"tag_rules"}),
        ({"git_poll_seconds": "soon"}, {"git_poll_seconds"}),
        ({"poll_url": "ftp://x", "poll_url_seconds": "1"}, {"poll_url", "poll_url_seconds"}),
        ({"deploy_webhook": ""}, set()),
        ({"webhook": True, "webhook_provider": "bitbucket"}, {"webhook_provider"}),
        ({"branch": "", "tag_pattern": ""}, {"branch"}),
        ({"deploy_rollout": "no such/cluster"}, {"deploy_rollout"}),
        ({"repository": "x", "build_args": ["bad"]}, {"repository", "build_args"}),
    ],
)
def test_each_bad_field_is_named_by_its_input_name(
    fields: dict[str, object], bad: set[str]
) -> None:
    if not bad:
        validate_input(form(**fields), None)
        return
    with pytest.raises(KnotInvalid) as caught:
        validate_input(form(**fields), "secret-secret-secret")
    assert set(caught.value.errors) == bad
    assert str(caught.value).startswith("knot ")  # the CLI's one-line message


def test_a_knot_survives_the_round_trip_through_its_form() -> None:
    inp = form(
        tag_pattern="v*",
        tag_rules=["tag:v*={version}", "branch:main=stable"],
        build_args=["A=1", "B=x=y"],
        test_command="sh -c 'true'",
        owners=["alice", "bob"],
        webhook=True,
        webhook_provider="gitlab",
        git_poll_seconds="60",
        poll_url="https://example.test/release.json",
        deploy_command="deploy.sh",
        deploy_rollout="prod",
        sha_tag=True,
        latest=False,
    )
    knot = validate_input(inp, "the-secret")
    assert knot.build_args == {"A": "1", "B": "x=y"}
    assert knot.hooks.rollout == "prod"
    assert validate_input(to_input(knot), "the-secret") == knot
    assert "the-secret" not in repr(to_input(knot))
    assert public_spec(knot)["triggers"]["webhook_secret"] == MASK


@pytest.mark.parametrize(
    ("requested", "current", "stored", "shown"),
    [
        (None, "old", None, False),
        ("", "old", None, False),
        (MASK, "old", "old", False),
        ("my-own-secret", "old", "my-own-secret", False),
    ],
)
def test_webhook_secrets_are_kept_replaced_or_dropped(
    requested: str | None, current: str | None, stored: str | None, shown: bool
) -> None:
    assert resolve_webhook_secret(requested, current) == (stored, shown)


@pytest.mark.parametrize(("requested", "current"), [(GENERATE, "old"), (MASK, None)])
def test_a_new_webhook_secret_is_random_and_shown_once(requested: str, current: str | None) -> None:
    secret, shown = resolve_webhook_secret(requested, current)
    assert shown and secret and secret not in (current, MASK) and len(secret) >= 32


def test_a_webhook_set_up_for_one_provider_refuses_the_others() -> None:
    body = b'{"ref": "refs/heads/main", "after": "' + b"a" * 40 + b'"}'
    signature = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    github = {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + signature}
    assert triggers.verify(github, body, "s3cret", None) == "github"
    assert triggers.verify(github, body, "s3cret", "github") == "github"
    with pytest.raises(triggers.WebhookError, match="takes gitea deliveries") as caught:
        triggers.verify(github, body, "s3cret", "gitea")
    assert caught.value.status == 401
