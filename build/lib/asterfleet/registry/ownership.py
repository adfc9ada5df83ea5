"""What the registry keeps of its own: who owns which namespace, the grants
owners give, and which repositories or namespaces are public.

Who someone is (users, passwords, tokens) is :mod:`asterfleet.auth`; this
module answers, for an authenticated :class:`~asterfleet.auth.Principal`,
what it may touch. A user owns the namespace of their own name unless
someone else already owns a namespace of that name.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, delete, insert, select, update

from asterfleet.auth.principal import Principal
from asterfleet.errors import UsageError
from asterfleet.registry.schema import reg_grants, reg_namespaces, reg_repositories
from asterfleet.registry.scope import REPOSITORY_RE, AccessView, Scope, granted_actions

ACTIONS = ("pull", "push", "delete")


class Ownership:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reads -----------------------------------------------------------------------

    def namespaces_of(self, username: str) -> frozenset[str]:
        """Namespaces ``username`` owns: those recorded, and the one of their
        own name unless another user owns it."""
        with self.engine.connect() as conn:
            owned = {
                r.name
                for r in conn.execute(
                    select(reg_namespaces.c.name).where(reg_namespaces.c.owner == username)
                )
            }
            own_name = conn.execute(
                select(reg_namespaces.c.owner).where(reg_namespaces.c.name == username)
            ).first()
        if own_name is None:
            owned.add(username)
        return frozenset(owned)

    def owner_of(self, namespace: str) -> str | None:
        """The recorded owner of a namespace, or None (then its name's user owns it)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(reg_namespaces.c.owner).where(reg_namespaces.c.name == namespace)
            ).first()
        return None if row is None else str(row.owner)

    def grants_of(self, username: str) -> dict[str, frozenset[str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(reg_grants).where(reg_grants.c.username == username))
            return {r.namespace: frozenset(r.actions.split(",")) for r in rows}

    def public_names(self, repositories: Iterable[str]) -> frozenset[str]:
        """Which of these repositories (or their namespaces) are public."""
        repos = set(repositories)
        if not repos:
            return frozenset()
        namespaces = {r.split("/", 1)[0] for r in repos}
        with self.engine.connect() as conn:
            found = {
                r.name
                for r in conn.execute(
                    select(reg_repositories.c.name).where(
                        reg_repositories.c.name.in_(repos), reg_repositories.c.public.is_(True)
                    )
                )
            }
            found |= {
                r.name
                for r in conn.execute(
                    select(reg_namespaces.c.name).where(
                        reg_namespaces.c.name.in_(namespaces), reg_namespaces.c.public.is_(True)
                    )
                )
            }
        return frozenset(found)

    def view(self, principal: Principal | None, repositories: Iterable[str]) -> AccessView:
        """Everything the access decision needs about one principal."""
        repos = list(repositories)
        public = self.public_names(repos)
        if principal is None:
            return AccessView(username=None, public=public)
        return AccessView(
            username=principal.username,
            is_admin=principal.is_admin,
            owned=self.namespaces_of(principal.username),
            grants=self.grants_of(principal.username),
            public=public,
            token_scopes=principal.token_scopes,
        )

    def may(self, principal: Principal, repository: str, action: str) -> bool:
        view = self.view(principal, [repository])
        return action in granted_actions(view, Scope("repository", repository, (action,)))

    # -- management (CLI and console) -----------------------------------------------

    def add_namespace(self, name: str, owner: str, public: bool = False) -> None:
        if "/" in name or not REPOSITORY_RE.match(name):
            raise UsageError(f"namespace {name!r}: use lower-case letters, digits, '.', '_' or '-'")
        with self.engine.begin() as conn:
            row = conn.execute(select(reg_namespaces).where(reg_namespaces.c.name == name)).first()
            if row is not None and row.owner != owner:
                raise UsageError(f"namespace {name!r} is owned by {row.owner!r}")
            if row is None:
                conn.execute(insert(reg_namespaces).values(name=name, owner=owner, public=public))
            else:
                conn.execute(
                    update(reg_namespaces)
                    .where(reg_namespaces.c.name == name)
                    .values(public=public)
                )

    def grant(self, namespace: str, username: str, actions: Iterable[str]) -> None:
        acts = sorted(set(actions))
        if not acts or not set(acts) <= set(ACTIONS):
            raise UsageError("grant actions: choose among pull, push, delete (comma separated)")
        with self.engine.begin() as conn:
            conn.execute(
                delete(reg_grants).where(
                    reg_grants.c.namespace == namespace, reg_grants.c.username == username
                )
            )
            conn.execute(
                insert(reg_grants).values(
                    namespace=namespace, username=username, actions=",".join(acts)
                )
            )

    def revoke_grant(self, namespace: str, username: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(reg_grants).where(
                    reg_grants.c.namespace == namespace, reg_grants.c.username == username
                )
            )

    def grants(self) -> list[dict[str, str]]:
        with self.engine.connect() as conn:
            return [
                {"namespace": r.namespace, "user": r.username, "actions": r.actions}
                for r in conn.execute(
                    select(reg_grants).order_by(reg_grants.c.namespace, reg_grants.c.username)
                )
            ]

    def set_public(self, repository: str, public: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(reg_repositories).where(reg_repositories.c.name == repository))
            conn.execute(insert(reg_repositories).values(name=repository, public=public))

    def forget_user(self, username: str) -> None:
        """A removed user's grants go; namespaces they owned stay recorded (so
        a new user of the same name does not inherit them)."""
        with self.engine.begin() as conn:
            conn.execute(delete(reg_grants).where(reg_grants.c.username == username))
