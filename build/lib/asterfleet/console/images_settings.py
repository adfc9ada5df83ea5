"""Settings of the console's Images and Builds areas (the registry front end,
the token server and the image factory served by the console process)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class ImagesSettings(BaseModel):
    # What `asterfleet registry config --out DIR` wrote: config.yml, the
    # token signing key and certificate, the notification secret.
    registry_dir: Path
    # The factory's and registry's tables (knots, builds, catalogue, reg_*).
    factory_db: str | None = None  # None: the factory's default SQLite file
    # Who logs in to the registry: the console's users ("console": one login
    # for both) or the registry's own reg_users table ("registry").
    identity: Literal["console", "registry"] = "console"
    # HOST[:PORT] shown in pull commands (default: the registry's own address).
    registry_host: str | None = None
    token_ttl: int = Field(default=300, ge=30)
    reconcile_interval: float = Field(default=300.0, gt=0)
    login_cache_seconds: float = Field(default=5.0, ge=0)
