"""Distribution token scopes and the access decision, as pure functions.

A scope is ``type[(class)]:name:actions`` where the name may itself contain
colons (``repository:localhost:5000/a/b:pull`` is not valid, but a
``registry:catalog:*`` is). Actions are comma separated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Distribution's repository name grammar (reference.NameRegexp), simplified:
# lower-case path components separated by "/", with ".", "_", "__", "-" inside.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TYPE_RE = re.compile(r"^[a-z0-9]+(?:\([a-z0-9]+\))?$")

KNOWN_ACTIONS = ("pull", "push", "delete", "*")


@dataclass(frozen=True)
class Scope:
    type: str  # "repository" or "registry"
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


class ScopeError(ValueError):
    """A scope string that does not follow the token spec."""


def parse_scope(text: str) -> Scope:
    """One scope string; raises ScopeError naming it when malformed."""
    first = text.find(":")
    last = text.rfind(":")
    if first <= 0 or last == first:
        raise ScopeError(f"scope {text!r}: expected TYPE:NAME:ACTIONS")
    rtype, name, actions_text = text[:first], text[first + 1 : last], text[last + 1 :]
    if not _TYPE_RE.match(rtype) or not name:
        raise ScopeError(f"scope {text!r}: bad resource type or empty name")
    if rtype.startswith("repository") and not REPOSITORY_RE.match(name):
        raise ScopeError(f"scope {text!r}: {name!r} is not a valid repository name")
    actions = tuple(dict.fromkeys(a for a in actions_text.split(",") if a))
    if not actions:
        raise ScopeError(f"scope {text!r}: no actions")
    return Scope(rtype.split("(")[0], name, actions)


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Every scope in ``values``; a value may hold several separated by spaces
    (the OAuth2 form), and the same resource asked twice is merged."""
    merged: dict[tuple[str, str], list[str]] = {}
    for value in values:
        for text in value.split():
            scope = parse_scope(text)
            acts = merged.setdefault((scope.type, scope.name), [])
            acts.extend(a for a in scope.actions if a not in acts)
    return [Scope(t, n, tuple(a)) for (t, n), a in merged.items()]


def parse_token_scope(text: str) -> Scope:
    """A personal access token's scope: a repository scope whose name may
    end in ``/*`` (every repository under that namespace)."""
    wildcard = ":" in text and text[: text.rfind(":")].endswith("/*")
    if not wildcard:
        return parse_scope(text)
    head, _, actions = text.rpartition(":")
    parsed = parse_scope(head[:-2] + "/x:" + actions)
    return Scope(parsed.type, parsed.name[:-1] + "*", parsed.actions)


def namespace_of(repository: str) -> str:
    """The first path component: the namespace a user owns or is granted."""
    return repository.split("/", 1)[0]


@dataclass(frozen=True)
class AccessView:
    """What the identity store says about one principal, for one request."""

    username: str | None  # None: anonymous
    is_admin: bool = False
    owned: frozenset[str] = frozenset()
    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    public: frozenset[str] = frozenset()  # public repositories and namespaces
    # A personal access token narrows what its user may do: None = no limit.
    token_scopes: tuple[str, ...] | None = None


def _token_allows(token_scopes: tuple[str, ...] | None, scope: Scope, action: str) -> bool:
    if token_scopes is None:
        return True
    for allowed in token_scopes:
        if allowed in (action, "*"):
            return True
        if ":" in allowed:
            try:
                parsed = parse_token_scope(allowed)
            except ScopeError:
                continue
            if parsed.type != scope.type:
                continue
            name_ok = parsed.name == scope.name or (
                parsed.name.endswith("/*") and scope.name.startswith(parsed.name[:-1])
            )
            if name_ok and (action in parsed.actions or "*" in parsed.actions):
                return True
    return False


def is_public(view: AccessView, repository: str) -> bool:
    return repository in view.public or namespace_of(repository) in view.public


def granted_actions(view: AccessView, scope: Scope) -> tuple[str, ...]:
    """The subset of ``scope.actions`` the principal may perform.

    Owners (and admins) may pull, push and delete in their namespaces;
    a grant gives the actions it lists; anyone, even anonymous, may pull a
    public repository. Only admins reach ``registry:catalog:*``.
    """
    if scope.type == "registry":
        if view.is_admin and scope.name == "catalog":
            return tuple(a for a in scope.actions if a == "*")
        return ()
    if scope.type != "repository":
        return ()
    ns = namespace_of(scope.name)
    allowed: set[str] = set()
    if view.username is not None:
        if view.is_admin or ns in view.owned or ns == view.username:
            allowed = {"pull", "push", "delete", "*"}
        else:
            allowed = set(view.grants.get(ns, frozenset()))
    public = is_public(view, scope.name)
    return tuple(
        a
        for a in scope.actions
        if (a == "pull" and public) or (a in allowed and _token_allows(view.token_scopes, scope, a))
    )
