"""etcd roles and users for one cluster, least privilege first.

Each part of the fleet gets its own etcd role and user, named
``<cluster>-<part>`` so several clusters can share one etcd:

| role | may write | may read |
|---|---|---|
| node | ``nodes/`` | ``nodes/``, ``balancers/`` (the drain handshake) |
| balancer | ``balancers/`` | the whole cluster prefix |
| operator | ``admin/``, ``rollouts/`` | the whole cluster prefix |
| capture | the ``capture`` key | the ``capture`` key |

A node credential therefore cannot drain another node, reroute calls by
weight, or touch another cluster. :func:`plan` is pure; :func:`apply` sends
the plan to etcd and switches authentication on (etcd needs a ``root``
user for that, which is created once with a random password).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from asterfleet.fleet.keys import Keyspace

if TYPE_CHECKING:
    from asterfleet.etcd_client import Etcd

Access = Literal["read", "write", "readwrite"]
PARTS = ("node", "balancer", "operator", "capture")
ROOT = "root"


@dataclass(frozen=True)
class Grant:
    access: Access
    key: str
    prefix: bool  # the whole range under ``key``, or the one key

    @property
    def range_end(self) -> bytes:
        """etcd's range end: the key after every key starting with ``key``."""
        if not self.prefix:
            return b""
        raw = bytearray(self.key.encode())
        raw[-1] += 1
        return bytes(raw)


@dataclass(frozen=True)
class Role:
    name: str
    part: str
    grants: tuple[Grant, ...]


def role_name(cluster: str, part: str) -> str:
    return f"{cluster}-{part}"


def plan(cluster: str) -> list[Role]:
    """The four roles of ``cluster`` (the user of each has the same name)."""
    ks = Keyspace(cluster)
    everything = Grant("read", ks.prefix, prefix=True)
    table: dict[str, tuple[Grant, ...]] = {
        "node": (
            Grant("readwrite", ks.nodes, prefix=True),
            Grant("read", ks.balancers, prefix=True),
        ),
        "balancer": (everything, Grant("readwrite", ks.balancers, prefix=True)),
        "operator": (
            everything,
            Grant("readwrite", ks.admin, prefix=True),
            Grant("readwrite", ks.prefix + "rollouts/", prefix=True),
        ),
        "capture": (Grant("readwrite", ks.capture, prefix=False),),
    }
    return [Role(role_name(cluster, part), part, table[part]) for part in PARTS]


@dataclass
class Outcome:
    """What :func:`apply` did: users created (with their new passwords),
    users that already existed (password kept), and whether auth is on."""

    created: dict[str, str]
    kept: list[str]
    auth_enabled: bool


def _exists(exc: BaseException) -> bool:
    return "already exists" in str(exc)


async def apply(etcd: Etcd, roles: list[Role]) -> Outcome:
    """Create (or complete) the roles and users, then enable auth. Running
    it again is harmless: existing users keep their passwords."""
    from aetcd import rpc

    kinds = {"read": rpc.Permission.READ, "write": rpc.Permission.WRITE}
    kinds["readwrite"] = rpc.Permission.READWRITE
    created: dict[str, str] = {}
    kept: list[str] = []

    async def call(method: str, request: Any, tolerate_exists: bool = False) -> bool:
        try:
            await etcd.auth_call(method, request)
        except Exception as exc:
            if tolerate_exists and _exists(exc):
                return False
            raise
        return True

    async def ensure_user(name: str, role: str) -> None:
        password = secrets.token_urlsafe(24)
        if await call(
            "UserAdd", rpc.AuthUserAddRequest(name=name, password=password), tolerate_exists=True
        ):
            created[name] = password
        else:
            kept.append(name)
        await call("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=name, role=role))

    for role in roles:
        await call("RoleAdd", rpc.AuthRoleAddRequest(name=role.name), tolerate_exists=True)
        for grant in role.grants:
            perm = rpc.Permission(
                permType=kinds[grant.access], key=grant.key.encode(), range_end=grant.range_end
            )
            await call(
                "RoleGrantPermission",
                rpc.AuthRoleGrantPermissionRequest(name=role.name, perm=perm),
            )
        await ensure_user(role.name, role.name)
    # etcd refuses to enable auth without a root user holding the root role.
    await call("RoleAdd", rpc.AuthRoleAddRequest(name=ROOT), tolerate_exists=True)
    await ensure_user(ROOT, ROOT)
    await call("AuthEnable", rpc.AuthEnableRequest())
    return Outcome(created, kept, auth_enabled=True)
