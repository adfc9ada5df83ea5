"""keepalived.conf for a pair (or more) of Kamailio load balancers sharing a
virtual IP: a pure renderer from typed options.

Choices, and why:

- VRRP version 2 with unicast peers: no multicast needed (clouds and many
  switches drop it), and v2 is the version that still carries
  authentication (VRRPv3 dropped it).
- ``auth_type PASS``: keeps a misconfigured neighbour with the same router
  id from joining; it is not a security boundary (the password travels in
  clear text, and keepalived uses only its first 8 characters).
- Every balancer starts as BACKUP with ``nopreempt``: when a failed balancer
  comes back it stays backup even if its priority is higher, so calls are
  not moved a second time (and the VIP does not flap if it keeps failing).
  Preemption would move the VIP back to the "preferred" box as soon as it
  answers, costing a second failover for no gain. (keepalived requires
  state BACKUP for nopreempt.)
- The health check is a ``vrrp_script`` that asks Kamailio over JSON-RPC for
  ``core.uptime`` (``python -m asterfleet.vip.health``, the lean twin of
  ``asterfleet vip check-kamailio`` that starts in 0.1 s): a Kamailio that is
  running but wedged fails it, unlike a process check. ``fall`` failures in
  a row put the instance in FAULT: it gives the VIP away at once (priority 0
  advert) instead of waiting for the peer's master-down timer.
- ``notify`` runs on every state change with ``GROUP|INSTANCE NAME STATE
  PRIORITY``: the place for the balancer agent or an alert hook.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from asterfleet.errors import UsageError

#: keepalived compares only the first 8 characters of a PASS password.
AUTH_PASS_MAX = 8
_IFNAME = re.compile(r"^[A-Za-z0-9_.@:-]{1,15}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class KeepalivedOptions:
    """Everything one balancer's keepalived.conf depends on."""

    #: Interface that carries the VIP and the VRRP adverts.
    interface: str
    #: The virtual IP with its prefix, e.g. ``10.0.0.100/24``.
    vip: str
    #: The other balancers' addresses (unicast VRRP).
    peers: Sequence[str]
    #: 1-254; the highest priority wins the first election.
    priority: int
    #: VRRP password (only from the environment on the command line).
    auth_pass: str
    #: The JSON-RPC target of the local Kamailio (socket path or http URL).
    rpc: str
    #: The VRRP router id, 1-255, the same on every balancer of the pair.
    virtual_router_id: int = 51
    #: This balancer's own address as VRRP source (default: the interface's).
    unicast_src: str | None = None
    #: A name for this host in logs (``router_id``).
    router_id: str | None = None
    #: Seconds between adverts (VRRPv2: whole seconds).
    advert_int: int = 1
    #: The health-check command; ``{rpc}`` is replaced by :attr:`rpc`.
    #: See :func:`asterfleet.vip.health.check_command` for the form to use.
    check_command: str = "/usr/bin/env python3 -m asterfleet.vip.health -q --rpc {rpc}"
    #: Seconds between health checks, and failures/successes to change state.
    check_interval: int = 1
    check_fall: int = 2
    check_rise: int = 2
    #: Run on every state change (keepalived appends type, name, state, priority).
    notify: str | None = None
    #: The instance name.
    instance: str = "asterfleet_lb"
    #: See the module docstring; True is the recommended setting.
    nopreempt: bool = True
    #: User that runs the check and notify scripts.
    script_user: str = "root"

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", tuple(self.peers))


def _address(value: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise UsageError(f"{what} {value!r} is not an IPv4 address") from None


def _int_in(value: int, what: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{what} must be an integer from {low} to {high}, not {value!r}")


def _no_quotes(value: str, what: str) -> None:
    if any(c in value for c in '"\n\r\\'):
        raise UsageError(f"{what} must not contain quotes, backslashes or newlines")


def validate(opts: KeepalivedOptions) -> ipaddress.IPv4Interface:
    """Raise UsageError naming the first bad option; the parsed VIP."""
    if not _IFNAME.match(opts.interface):
        raise UsageError(
            f"--interface {opts.interface!r}: expected an interface name of 1-15 characters"
        )
    if "/" not in opts.vip:
        raise UsageError(f"--vip {opts.vip!r}: give the prefix too, e.g. 10.0.0.100/24")
    try:
        vip = ipaddress.IPv4Interface(opts.vip)
    except ValueError:
        raise UsageError(f"--vip {opts.vip!r} is not an IPv4 ADDRESS/PREFIX") from None
    if not opts.peers:
        raise UsageError("at least one --peer is needed (the other balancer's address)")
    seen: set[ipaddress.IPv4Address] = set()
    for peer in opts.peers:
        addr = _address(peer, "--peer")
        if addr == vip.ip:
            raise UsageError(f"--peer {peer} is the VIP itself: give the other balancer's address")
        if addr in seen:
            raise UsageError(f"--peer {peer} is given twice")
        seen.add(addr)
    if opts.unicast_src is not None:
        src = _address(opts.unicast_src, "--unicast-src")
        if src in seen or src == vip.ip:
            raise UsageError(f"--unicast-src {src} must be this balancer's own address")
    _int_in(opts.priority, "--priority", 1, 254)
    _int_in(opts.virtual_router_id, "--virtual-router-id", 1, 255)
    _int_in(opts.advert_int, "advert_int", 1, 255)
    _int_in(opts.check_interval, "check interval", 1, 3600)
    _int_in(opts.check_fall, "check fall", 1, 100)
    _int_in(opts.check_rise, "check rise", 1, 100)
    if not opts.auth_pass:
        raise UsageError("the VRRP password is empty: set ASTERFLEET_VRRP_PASS")
    if len(opts.auth_pass) > AUTH_PASS_MAX:
        raise UsageError(
            f"the VRRP password is {len(opts.auth_pass)} characters; keepalived uses only "
            f"the first {AUTH_PASS_MAX}: use at most {AUTH_PASS_MAX}"
        )
    if not opts.auth_pass.isprintable() or " " in opts.auth_pass:
        raise UsageError("the VRRP password must be printable, without spaces")
    _no_quotes(opts.auth_pass, "the VRRP password")
    if any(c in opts.auth_pass for c in "#!'"):
        raise UsageError(
            "the VRRP password must not contain #, ! or ' (keepalived reads # and ! as a comment)"
        )
    if not opts.rpc:
        raise UsageError("--rpc is empty: give Kamailio's JSON-RPC socket path or http URL")
    _no_quotes(opts.rpc, "--rpc")
    if "'" in opts.rpc:
        raise UsageError("--rpc must not contain ' (it is quoted inside the check script)")
    _no_quotes(opts.check_command, "the check command")
    if opts.notify is not None:
        _no_quotes(opts.notify, "--notify")
    for value, what in (
        (opts.instance, "instance name"),
        (opts.router_id, "--router-id"),
        (opts.script_user, "script user"),
    ):
        if value is not None and not _NAME.match(value):
            raise UsageError(f"{what} {value!r}: use letters, digits, '.', '_' and '-'")
    return vip


def render_keepalived_conf(opts: KeepalivedOptions) -> str:
    """The complete keepalived.conf for one balancer (validated first)."""
    vip = validate(opts)
    check = opts.check_command.replace("{rpc}", shlex.quote(opts.rpc))
    lines = [
        "# keepalived.conf for an asterfleet load balancer.",
        "# GENERATED by `asterfleet vip config`: render it again instead of editing.",
        "",
        "global_defs {",
    ]
    if opts.router_id:
        lines.append(f"    router_id {opts.router_id}")
    lines += [
        # Scripts run as this user; with enable_script_security keepalived
        # refuses scripts that a non-root user could modify.
        f"    script_user {opts.script_user}",
        "    enable_script_security",
        "    vrrp_version 2",
        "}",
        "",
        "# Kamailio is healthy when it answers core.uptime over JSON-RPC, not",
        "# merely when its process exists.",
        "vrrp_script chk_kamailio {",
        f'    script "{check}"',
        f"    interval {opts.check_interval}",
        f"    timeout {max(1, opts.check_interval * 2)}",
        f"    fall {opts.check_fall}",
        f"    rise {opts.check_rise}",
        "}",
        "",
        f"vrrp_instance {opts.instance} {{",
        "    # Every balancer starts as BACKUP; the election picks the master.",
        "    state BACKUP",
        f"    interface {opts.interface}",
        f"    virtual_router_id {opts.virtual_router_id}",
        f"    priority {opts.priority}",
        f"    advert_int {opts.advert_int}",
    ]
    if opts.nopreempt:
        lines += [
            "    # nopreempt: a balancer that failed and returns stays BACKUP, even",
            "    # with a higher priority. The VIP moves only when its holder fails,",
            "    # so a returning (or repeatedly failing) box never moves calls",
            "    # again and the VIP cannot flap between the two.",
            "    nopreempt",
        ]
    else:
        lines += [
            "    # Preemption on: a higher-priority balancer takes the VIP back as",
            "    # soon as it is healthy, which costs a second failover.",
        ]
    if opts.unicast_src:
        lines.append(f"    unicast_src_ip {opts.unicast_src}")
    lines.append("    unicast_peer {")
    lines += [f"        {peer}" for peer in opts.peers]
    lines += [
        "    }",
        "    authentication {",
        "        auth_type PASS",
        f"        auth_pass {opts.auth_pass}",
        "    }",
        "    virtual_ipaddress {",
        f"        {vip.with_prefixlen} dev {opts.interface}",
        "    }",
        "    track_script {",
        "        chk_kamailio",
        "    }",
    ]
    if opts.notify:
        lines += [
            "    # Called as: NOTIFY INSTANCE NAME MASTER|BACKUP|FAULT|STOP PRIORITY",
            f'    notify "{opts.notify}"',
        ]
    lines += ["}", ""]
    return "\n".join(lines)
