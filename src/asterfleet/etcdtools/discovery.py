"""Discovery tokens on an etcd you already run: the protocol etcd's
``--discovery`` flag speaks, without the public discovery.etcd.io.

The protocol (etcd v2 discovery, still what ``--discovery`` uses in 3.4):

- a token is a v2 directory ``/_etcd/registry/<token>`` on the *discovery*
  etcd, holding ``_config/size`` = the number of members expected;
- the discovery URL handed to each new member is
  ``http://HOST:PORT/v2/keys/_etcd/registry/<token>``;
- each member registers itself as ``<token>/<member id hex>`` with the value
  ``name=peerURL``, waits until ``size`` members registered, builds its
  ``--initial-cluster`` from them and bootstraps. Members beyond ``size``
  fail (or become proxies, per ``--discovery-fallback``).

Requirements verified with etcd 3.4.23: the discovery etcd must serve the v2
API, which 3.4 does only with ``--enable-v2=true`` (without it every
``/v2/keys`` request answers ``404 page not found``); the v2 store is
separate from the v3 keyspace, so tokens never show up in v3 reads. The
discovery etcd must not be the cluster being bootstrapped, and a token is
for one bootstrap only: a member that restarts with its data directory
ignores ``--discovery``; one that lost it must rejoin
(:mod:`asterfleet.etcdtools.rejoin`), not rediscover.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from asterfleet.errors import AsterfleetError, UsageError
from asterfleet.etcdtools.cluster import normalize_endpoint
from asterfleet.etcdtools.transport import Transport

if TYPE_CHECKING:
    from asterfleet.etcd_client import EtcdSecurity

REGISTRY = "/v2/keys/_etcd/registry"
MAX_SIZE = 99


class DiscoveryError(AsterfleetError):
    """The discovery etcd refused a request."""


@dataclass(frozen=True)
class Registration:
    """One member registered under a token."""

    member_id: str
    name: str
    peer_urls: tuple[str, ...]


@dataclass(frozen=True)
class Token:
    url: str
    size: int
    registered: tuple[Registration, ...] = ()


def discovery_url(etcd: str, token: str, tls: bool = False) -> str:
    return f"{normalize_endpoint(etcd, tls)}{REGISTRY}/{token}"


def _check_size(size: int) -> None:
    if not 1 <= size <= MAX_SIZE:
        raise UsageError(f"--size {size}: the cluster size must be from 1 to {MAX_SIZE} (3 or 5)")


def _refused(reply: httpx.Response, what: str) -> AsterfleetError:
    if reply.status_code == 401:
        return UsageError(
            f"{what}: the discovery etcd wants a v2 user: give --etcd-user (its password "
            "in ASTERFLEET_ETCD_PASSWORD or --etcd-password-file)"
        )
    return DiscoveryError(f"{what} answered {reply.status_code} {reply.text.strip()[:200]}")


def require_v2(etcd: str, gateway: Transport) -> None:
    """UsageError unless ``etcd`` serves the v2 keys API."""
    base = normalize_endpoint(etcd, gateway.tls)
    reply = gateway.v2("GET", f"{base}/v2/keys/")
    if reply.status_code == 404:
        raise UsageError(
            f"etcd at {base} does not serve the v2 API that discovery needs: start that etcd "
            "with --enable-v2=true (etcd 3.4 turns it off by default)"
        )
    if reply.status_code != 200:
        raise _refused(reply, f"etcd at {base}: GET /v2/keys/")


def new_token(
    etcd: str,
    size: int,
    token: str | None = None,
    timeout: float = 3.0,
    security: EtcdSecurity | None = None,
) -> Token:
    """Create a token for ``size`` members on ``etcd``; its discovery URL."""
    _check_size(size)
    gateway = Transport(security, timeout)
    require_v2(etcd, gateway)
    token = token or secrets.token_hex(16)
    url = discovery_url(etcd, token, gateway.tls)
    reply = gateway.v2(
        "PUT", f"{url}/_config/size", data={"value": str(size)}, params={"prevExist": "false"}
    )
    if reply.status_code == 412:
        raise UsageError(f"discovery token {token!r} already exists: use a new token")
    if reply.status_code not in (200, 201):
        raise _refused(reply, f"creating {url}")
    return Token(url, size)


def parse_registrations(node: dict[str, Any]) -> tuple[Registration, ...]:
    """The members registered in a GET of the token directory.

    ``_config`` is a hidden v2 key (leading underscore) and never listed.
    """
    regs: list[Registration] = []
    for child in node.get("nodes") or ():
        if child.get("dir"):
            continue
        member_id = str(child.get("key", "")).rsplit("/", 1)[-1]
        pairs = [part.split("=", 1) for part in str(child.get("value", "")).split(",")]
        named = [pair for pair in pairs if len(pair) == 2]
        name = named[0][0] if named else ""
        regs.append(Registration(member_id, name, tuple(url for _, url in named)))
    return tuple(sorted(regs, key=lambda r: (r.name, r.member_id)))


def show(url: str, timeout: float = 3.0, security: EtcdSecurity | None = None) -> Token:
    """The size and the members registered so far under a discovery URL."""
    url = url.rstrip("/")
    if "/v2/keys/" not in url:
        raise UsageError(
            f"discovery URL {url!r}: expected http(s)://HOST:PORT/v2/keys/_etcd/registry/TOKEN"
        )
    gateway = Transport(security, timeout)
    size_reply = gateway.v2("GET", f"{url}/_config/size")
    if size_reply.status_code == 404:
        raise UsageError(
            f"discovery token {url} does not exist (or the v2 API is off on that etcd)"
        )
    if size_reply.status_code != 200:
        raise _refused(size_reply, f"GET {url}/_config/size")
    try:
        size = int(size_reply.json()["node"]["value"])
    except (KeyError, TypeError, ValueError):
        raise DiscoveryError(f"{url}/_config/size is not a number: not a discovery token") from None
    listing = gateway.v2("GET", url)
    if listing.status_code != 200:
        raise _refused(listing, f"GET {url}")
    return Token(url, size, parse_registrations(listing.json().get("node") or {}))
