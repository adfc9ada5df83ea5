"""What every request handler reaches through ``request.app.state.console``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from asterfleet.auth import Authenticator
from asterfleet.console.areas import Area
from asterfleet.console.metrics import ConsoleMetrics
from asterfleet.console.monitor import FleetMonitor
from asterfleet.console.settings import ConsoleSettings
from asterfleet.db import Database
from asterfleet.etcd_client import Etcd
from asterfleet.fleet.keys import Keyspace


@dataclass
class ConsoleState:
    settings: ConsoleSettings
    db: Database
    ks: Keyspace
    templates: Jinja2Templates
    metrics: ConsoleMetrics
    logins: Authenticator  # the one login path, shared with the registry's /token
    areas: list[Area]
    etcd: Etcd | None = None  # for reads and actions (the monitor has its own)
    monitor: FleetMonitor | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    stats_ranges: Any = None  # the Statistics area's kept tallies (console.stats_ranges)

    def require_etcd(self) -> Etcd:
        assert self.etcd is not None, "the console's etcd client starts with the app"
        return self.etcd


def console_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state
