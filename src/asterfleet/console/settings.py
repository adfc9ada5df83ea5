"""The console's one typed settings object (flags, then ASTERFLEET_* env)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr

from asterfleet.console.images_settings import ImagesSettings
from asterfleet.errors import UsageError


class ConsoleSettings(BaseModel):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=0, le=65535)
    etcd: str = "127.0.0.1:2379"
    cluster: str = "default"
    db_url: str | None = None  # None: SQLite under the user's state directory
    admin_password: SecretStr | None = None  # bootstrap: creates 'admin' if no user exists
    secure_cookies: bool = False  # set when served over HTTPS (behind a proxy)
    session_ttl: float = Field(default=12 * 3600.0, gt=0)
    login_max_failures: int = Field(default=5, ge=1)
    login_window: float = Field(default=60.0, gt=0)
    watch: bool = True  # follow etcd live (tests of pages alone turn it off)
    images: ImagesSettings | None = None  # registry + factory served here too
    capture_db: str | None = None  # the capture server's database (Calls area)
    metrics_listen: str | None = None  # HOST:PORT for /metrics without a login
    # Seconds the fleet's history (events, address sightings) is kept; None: always.
    history_retention: float | None = Field(default=None, gt=0)

    def shown(self) -> dict[str, Any]:
        """The settings as printed by --show-config (no secrets)."""
        data = self.model_dump(exclude={"admin_password"})
        data["admin_password"] = "(set)" if self.admin_password else None
        return data


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``) into a pair; UsageError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen {text!r}: use HOST:PORT, for example 127.0.0.1:8080")
    return host, int(port)
