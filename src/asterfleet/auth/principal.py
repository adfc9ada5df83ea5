"""Who is asking, once authenticated: the same object for the console, the
API, the registry's token endpoint and the factory worker."""

from __future__ import annotations

from dataclasses import dataclass

# What a password (or session) login may do, by role; a token narrows this.
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "admin": ("read", "write", "pull", "push", "delete"),
    "operator": ("read", "write", "pull", "push", "delete"),
    # Viewers only look at the fleet; in the registry they still own their namespace.
    "viewer": ("read", "pull", "push", "delete"),
}


@dataclass(frozen=True)
class Principal:
    username: str
    role: str
    # "console" (session cookie), "api" (bearer token on /api), "password",
    # "token" or "refresh" (registry logins), "service" (the console itself).
    via: str
    scopes: tuple[str, ...]
    csrf_token: str = ""
    token_name: str = ""
    # Set when the login was an API token: its scopes then limit the principal.
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_act(self) -> bool:
        return self.role in ("admin", "operator") and "write" in self.scopes

    @property
    def actor(self) -> str:
        """How actions are signed in the admin record and the events table:
        ``alice@console``, or ``alice@api:TOKEN-NAME`` for an API token."""
        if self.via == "api" and self.token_name:
            return f"{self.username}@api:{self.token_name}"
        return f"{self.username}@{self.via}"

    @property
    def may_scrape_metrics(self) -> bool:
        """Whether it may read a daemon's ``/metrics`` (the console's, the token
        server's): a token with scope ``metrics`` (what Prometheus scrapes with,
        and it opens nothing else) or ``read``, or a logged-in browser."""
        return "metrics" in self.scopes or "read" in self.scopes

    @property
    def token_scopes(self) -> tuple[str, ...] | None:
        """The token's scopes when a token limits this principal, else None."""
        return self.scopes if self.token_id is not None else None


def password_principal(username: str, role: str, via: str = "password") -> Principal:
    return Principal(username, role, via, ROLE_SCOPES.get(role, ("read",)))
