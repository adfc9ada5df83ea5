"""Prometheus metrics of one console process (a registry per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class ConsoleMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "asterfleet_console_http_requests",
            "HTTP requests served, by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.live_clients = Gauge(
            "asterfleet_console_live_clients",
            "Browsers following the fleet over server-sent events.",
            registry=r,
        )
        self.nodes = Gauge(
            "asterfleet_console_fleet_nodes",
            "Nodes in the fleet by effective state, as the console sees it.",
            ["state"],
            registry=r,
        )
        self.etcd_connected = Gauge(
            "asterfleet_console_etcd_connected",
            "1 while the console's watch on etcd is established.",
            registry=r,
        )
        self.login_failures = Counter(
            "asterfleet_console_login_failures",
            "Failed or rate-limited logins.",
            ["reason"],
            registry=r,
        )
        self.actions = Counter(
            "asterfleet_console_actions",
            "Operator actions taken through the console or the API.",
            ["action", "outcome"],
            registry=r,
        )
        self.events = Counter(
            "asterfleet_console_events_recorded",
            "Fleet events recorded into the events table.",
            ["kind"],
            registry=r,
        )
        self.history_trimmed = Counter(
            "asterfleet_console_history_trimmed",
            "Rows of the fleet's history deleted by --history-retention, by table "
            "(events, addresses).",
            ["table"],
            registry=r,
        )
