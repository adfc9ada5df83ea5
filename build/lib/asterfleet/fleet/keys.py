"""Where each record lives in etcd: one prefix per cluster."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ROOT = "/asterfleet"


@dataclass(frozen=True)
class Keyspace:
    cluster: str
    root: str = DEFAULT_ROOT

    @property
    def prefix(self) -> str:
        return f"{self.root.rstrip('/')}/{self.cluster}/"

    @property
    def nodes(self) -> str:
        return self.prefix + "nodes/"

    @property
    def admin(self) -> str:
        return self.prefix + "admin/"

    @property
    def balancers(self) -> str:
        return self.prefix + "balancers/"

    @property
    def capture(self) -> str:
        return self.prefix + "capture"

    def node(self, node_id: str) -> str:
        return self.nodes + node_id

    def admin_of(self, node_id: str) -> str:
        return self.admin + node_id

    def balancer(self, lb_id: str) -> str:
        return self.balancers + lb_id

    def kind_of(self, key: str) -> tuple[str, str] | None:
        """('nodes'|'admin'|'balancers', id) for a key under this cluster."""
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :]
        kind, sep, ident = rest.partition("/")
        if not sep or not ident or "/" in ident:
            return None
        if kind not in ("nodes", "admin", "balancers"):
            return None
        return kind, ident
