"""The health check keepalived runs: does Kamailio answer JSON-RPC?

A running process is not enough (a wedged Kamailio keeps its pid), so the
check asks ``core.uptime`` over the same RPC the balancer agent uses.
"""

from __future__ import annotations

import sys

from asterfleet.errors import RpcError, UsageError
from asterfleet.kamailio.rpc import call_sync


def check_command(python: str | None = None) -> str:
    """The keepalived ``vrrp_script`` command for this installation (``{rpc}`` left in).

    Through ``/usr/bin/env``: with ``enable_script_security`` keepalived runs
    the real path of a symlinked program, and a virtualenv's ``python`` is a
    symlink to the system interpreter, which then does not see the
    virtualenv (the check exits 1 with Kamailio perfectly healthy; seen with
    keepalived 2.2.7). ``env`` is a real file and execs the symlink as given.
    """
    return f"/usr/bin/env {python or sys.executable} -m asterfleet.vip.health -q --rpc {{rpc}}"


def kamailio_healthy(rpc: str, timeout: float = 1.0) -> tuple[bool, str]:
    """(healthy, one line saying why) for the Kamailio at ``rpc``."""
    try:
        result = call_sync(rpc, "core.uptime", timeout=timeout)
    except (RpcError, UsageError) as exc:
        return False, str(exc)
    uptime = result.get("uptime") if isinstance(result, dict) else None
    return True, f"kamailio at {rpc} up for {uptime} s"


def main(argv: list[str] | None = None) -> int:
    """``python -m asterfleet.vip.health --rpc TARGET``: exit 0 healthy, 1 not.

    keepalived runs the check every second; this entry point imports only
    the RPC client (about 0.1 s) instead of the whole command line.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m asterfleet.vip.health",
        description="Exit 0 when Kamailio answers core.uptime over JSON-RPC, 1 otherwise.",
    )
    parser.add_argument("--rpc", required=True, help="socket path or http URL")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds [1.0]")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    healthy, why = kamailio_healthy(args.rpc, args.timeout)
    if not args.quiet:
        print(why if healthy else f"unhealthy: {why}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
