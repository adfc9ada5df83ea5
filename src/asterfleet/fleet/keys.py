"""Where each record lives in etcd: one prefix per cluster."""

from __future__ import annotations

import re
from dataclasses import dataclass

from asterfleet.errors import UsageError

DEFAULT_ROOT = "/asterfleet"
# A cluster name becomes part of every key and of etcd role names: no '/',
# no '..', nothing a shell or etcd would read differently.
CLUSTER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_cluster_name(cluster: str) -> str:
    """``cluster`` if it is a valid cluster name, else UsageError."""
    if not CLUSTER_RE.match(cluster) or ".." in cluster:
        raise UsageError(
            f"--cluster {cluster!r}: use 1-63 letters, digits, '.', '_' or '-', starting "
            "with a letter or digit (it becomes the etcd prefix /asterfleet/CLUSTER/)"
        )
    return cluster


@dataclass(frozen=True)
class Keyspace:
    cluster: str
    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        check_cluster_name(self.cluster)

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

    @property
    def rollouts(self) -> str:
        return self.prefix + "rollouts/"

    def rollout(self, rollout_id: str) -> str:
        return self.rollouts + rollout_id

    def node(self, node_id: str) -> str:
        return self.nodes + node_id

    def admin_of(self, node_id: str) -> str:
        return self.admin + node_id

    def balancer(self, lb_id: str) -> str:
        return self.balancers + lb_id

    def execs_of(self, node_id: str) -> str:
        """Where `node exec` requests for one node and their results live."""
        return self.prefix + "exec/" + node_id + "/"

    def exec_request(self, node_id: str, request_id: str) -> str:
        return self.execs_of(node_id) + request_id

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
