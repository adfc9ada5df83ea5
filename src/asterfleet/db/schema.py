"""Tables of the console: the one identity (users, API tokens, refresh
tokens, login sessions) and fleet events."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="operator")
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    last_login_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    # The first characters of the token, shown in listings; the rest is
    # only ever stored as a hash.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    # Space separated: "read write", "pull repository:alice/app:pull,push".
    scopes: Mapped[str] = mapped_column(String(1024), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RefreshToken(Base):
    """A registry ``offline_token``: stands for the login that produced it."""

    __tablename__ = "refresh_tokens"

    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # The API token the login used (None: a password): its revocation, expiry
    # and scopes still apply to every refresh.
    token_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), nullable=True, index=True
    )
    scopes: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    service: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)


class Session(Base):
    __tablename__ = "sessions"

    # sha256 of the cookie value: a stolen database does not yield sessions.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)
    client: Mapped[str] = mapped_column(String(128), nullable=False, default="")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_cluster_at", "cluster", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, nullable=False)
    cluster: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    node_id: Mapped[str] = mapped_column(String(64), nullable=False, default="", index=True)
    actor: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")


class FleetAddress(Base):
    """A sighting of the fleet's address history (asterfleet.fleet.directory):
    ``name`` (a node or balancer) held ``address`` from ``since`` to ``until``."""

    __tablename__ = "fleet_addresses"
    __table_args__ = (Index("ix_fleet_addresses_cluster_address", "cluster", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster: Mapped[str] = mapped_column(String(64), nullable=False)
    address: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    since: Mapped[float] = mapped_column(Float, nullable=False)
    until: Mapped[float | None] = mapped_column(Float, nullable=True)


class SavedSearch(Base):
    """A Calls search a user saved under a name: the page's query string."""

    __tablename__ = "saved_searches"
    __table_args__ = (Index("ux_saved_searches_user_name", "user_id", "name", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    query: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
