"""The words a token's scope is made of, shared by the one identity
(:mod:`asterfleet.auth`), its store's migrations and the registry.

A token has plain scopes (``read`` and ``write`` for the console's API;
``metrics`` for /metrics only, the console's and the registry token
server's (what Prometheus scrapes with);
``pull``, ``push``, ``delete`` for the registry, in the namespaces its user
may use) or repository scopes (``repository:NAME:ACTIONS``, NAME ending in
``/*`` for a whole namespace). Repository names follow Distribution's
grammar (reference.NameRegexp, simplified): lower-case path components
separated by ``/``, with ``.``, ``_``, ``__``, ``-`` inside.
"""

from __future__ import annotations

import re

PLAIN_SCOPES = ("read", "write", "metrics", "pull", "push", "delete")

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_ACTION = r"(?:pull|push|delete|\*)"
REPOSITORY_SCOPE_RE = re.compile(
    rf"^repository:{_COMPONENT}(?:/{_COMPONENT})*(?:/\*)?:{_ACTION}(?:,{_ACTION})*$"
)


def is_scope(text: str) -> bool:
    return text in PLAIN_SCOPES or REPOSITORY_SCOPE_RE.match(text) is not None
