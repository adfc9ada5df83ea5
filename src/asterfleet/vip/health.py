"""The health check keepalived runs: does Kamailio answer JSON-RPC?

A running process is not enough (a wedged Kamailio keeps its pid), so the
check asks ``core.uptime`` over the same RPC the balancer agent uses.
"""

from __future__ import annotations

from asterfleet.errors import RpcError, UsageError
from asterfleet.kamailio.rpc import call_sync


def kamailio_healthy(rpc: str, timeout: float = 1.0) -> tuple[bool, str]:
    """(healthy, one line saying why) for the Kamailio at ``rpc``."""
    try:
        result = call_sync(rpc, "core.uptime", timeout=timeout)
    except (RpcError, UsageError) as exc:
        return False, str(exc)
    uptime = result.get("uptime") if isinstance(result, dict) else None
    return True, f"kamailio at {rpc} up for {uptime} s"
