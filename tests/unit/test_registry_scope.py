"""Token scopes and who may do what with a repository."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asterfleet.registry.scope import (
    AccessView,
    Scope,
    ScopeError,
    granted_actions,
    parse_scope,
    parse_scopes,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:alice/app:pull", Scope("repository", "alice/app", ("pull",))),
        ("repository:alice/app:pull,push", Scope("repository", "alice/app", ("pull", "push"))),
        ("repository:a/b/c:push,pull,push", Scope("repository", "a/b/c", ("push", "pull"))),
        ("registry:catalog:*", Scope("registry", "catalog", ("*",))),
        ("repository(plugin):alice/x:pull", Scope("repository", "alice/x", ("pull",))),
    ],
)
def test_parse_scope(text: str, expected: Scope) -> None:
    assert parse_scope(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "repository",
        "repository:alice",
        "repository::pull",
        "repository:Alice/App:pull",
        "repository:alice/app:",
        "REPO:x:pull",
        "repository:a//b:pull",
    ],
)
def test_parse_scope_rejects(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_parse_scopes_merges_repeats_and_space_separated() -> None:
    scopes = parse_scopes(["repository:a/b:pull repository:a/b:push", "registry:catalog:*"])
    assert scopes == [
        Scope("repository", "a/b", ("pull", "push")),
        Scope("registry", "catalog", ("*",)),
    ]


@given(st.text(max_size=80))
def test_parse_scope_never_crashes(text: str) -> None:
    try:
        scope = parse_scope(text)
    except ScopeError:
        return
    assert scope.actions and scope.name


ALICE = AccessView(
    username="alice",
    owned=frozenset({"alice", "team"}),
    grants={"carol": frozenset({"pull"}), "dave": frozenset({"pull", "push"})},
    public=frozenset({"bob/open", "pubns"}),
)
ANON = AccessView(username=None, public=frozenset({"bob/open", "pubns"}))
ADMIN = AccessView(username="root", is_admin=True)
PP = ("pull", "push")


@pytest.mark.parametrize(
    ("view", "scope", "expected"),
    [
        (ALICE, Scope("repository", "alice/app", PP), PP),
        (ALICE, Scope("repository", "team/app", PP), PP),
        (ALICE, Scope("repository", "bob/app", PP), ()),
        (ALICE, Scope("repository", "bob/open", PP), ("pull",)),
        (ALICE, Scope("repository", "pubns/x", PP), ("pull",)),
        (ALICE, Scope("repository", "carol/x", PP), ("pull",)),
        (ALICE, Scope("repository", "dave/x", PP), PP),
        (ALICE, Scope("registry", "catalog", ("*",)), ()),
        (ANON, Scope("repository", "alice/app", ("pull",)), ()),
        (ANON, Scope("repository", "bob/open", PP), ("pull",)),
        (
            ADMIN,
            Scope("repository", "anyone/x", ("pull", "push", "delete")),
            ("pull", "push", "delete"),
        ),
        (ADMIN, Scope("registry", "catalog", ("*",)), ("*",)),
    ],
)
def test_granted_actions(view: AccessView, scope: Scope, expected: tuple[str, ...]) -> None:
    assert granted_actions(view, scope) == expected


@pytest.mark.parametrize(
    ("token_scopes", "scope", "expected"),
    [
        (("pull",), Scope("repository", "alice/app", PP), ("pull",)),
        (("pull", "push"), Scope("repository", "alice/app", PP), PP),
        (("repository:alice/app:push",), Scope("repository", "alice/app", PP), ("push",)),
        (("repository:alice/*:pull,push",), Scope("repository", "alice/x", PP), PP),
        (("repository:alice/app:pull,push",), Scope("repository", "alice/other", PP), ()),
        # A token never widens what its user may do ...
        (("*",), Scope("repository", "bob/app", PP), ()),
        # ... and public repositories stay pullable whatever the token says.
        (("repository:alice/app:push",), Scope("repository", "bob/open", ("pull",)), ("pull",)),
    ],
)
def test_access_tokens_narrow_rights(
    token_scopes: tuple[str, ...], scope: Scope, expected: tuple[str, ...]
) -> None:
    view = AccessView(
        username="alice",
        owned=frozenset({"alice"}),
        public=frozenset({"bob/open"}),
        token_scopes=token_scopes,
    )
    assert granted_actions(view, scope) == expected
