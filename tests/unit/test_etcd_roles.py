"""Which etcd role may touch which keys (asterfleet etcd secure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.errors import UsageError
from asterfleet.etcd_client import EtcdSecurity
from asterfleet.etcdtools.roles import Grant, plan
from asterfleet.fleet.keys import Keyspace, check_cluster_name


def may(role_grants: tuple[Grant, ...], access: str, key: str) -> bool:
    for g in role_grants:
        inside = key.startswith(g.key) if g.prefix else key == g.key
        if inside and (g.access == "readwrite" or g.access == access):
            return True
    return False


ROLES = {r.part: r.grants for r in plan("prod")}
ks, other = Keyspace("prod"), Keyspace("staging")


@pytest.mark.parametrize(
    ("part", "access", "key", "allowed"),
    [
        ("node", "write", ks.node("ast1"), True),  # its own record
        ("node", "write", ks.admin_of("ast1"), False),  # cannot undrain itself
        ("node", "write", ks.balancer("lb1"), False),
        ("node", "read", ks.balancer("lb1"), True),  # the drain handshake reads these
        ("node", "write", other.node("ast1"), False),  # another cluster
        ("node", "read", other.node("ast1"), False),
        ("balancer", "read", ks.node("ast1"), True),
        ("balancer", "read", ks.admin_of("ast1"), True),
        ("balancer", "write", ks.balancer("lb1"), True),
        ("balancer", "write", ks.admin_of("ast1"), False),
        ("balancer", "write", ks.node("ast1"), False),
        ("operator", "write", ks.admin_of("ast1"), True),
        ("operator", "write", ks.prefix + "rollouts/r1", True),
        ("operator", "write", ks.node("ast1"), False),  # cannot forge a node
        ("operator", "read", other.admin_of("ast1"), False),
        ("capture", "write", ks.capture, True),
        ("capture", "write", ks.node("ast1"), False),
        ("capture", "read", ks.admin_of("ast1"), False),
    ],
)
def test_each_role_reaches_only_its_keys(part: str, access: str, key: str, allowed: bool) -> None:
    assert may(ROLES[part], access, key) is allowed


def test_prefix_range_end_is_the_next_key() -> None:
    assert Grant("read", "/asterfleet/prod/", prefix=True).range_end == b"/asterfleet/prod0"
    assert Grant("read", "/asterfleet/prod/capture", prefix=False).range_end == b""


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x" * 64, "a b", "a..b"])
def test_cluster_names_that_would_leave_the_prefix_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="--cluster"):
        check_cluster_name(bad)


@pytest.mark.parametrize(
    ("security", "message"),
    [
        (EtcdSecurity(cert=Path("/etc/hostname")), "--etcd-cert and --etcd-key go together"),
        (EtcdSecurity(user="ops"), "needs a password"),
        (EtcdSecurity(password="x"), "without --etcd-user"),
        (EtcdSecurity(cacert=Path("/nonexistent/ca.pem")), "--etcd-cacert /nonexistent"),
    ],
)
def test_etcd_security_that_does_not_fit_together_is_named(
    security: EtcdSecurity, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        security.check()
