"""The lab's live terminal view (pure: a status snapshot in, a renderable out)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "active": "green",
    "starting": "cyan",
    "draining": "yellow",
    "drained": "blue",
    "maintenance": "magenta",
    "unhealthy": "red",
}


def banner(info: dict[str, Any], password: str | None) -> str:
    lines = [
        "asterfleet lab is up",
        f"  SIP address to call : {info['sip']}",
        f"  etcd endpoint       : {info['etcd']}"
        + (" (TLS, client certificates, auth on)" if info.get("etcd_env") else ""),
        (
            f"  fleet from a shell  : . {info['etcd_env']}; asterfleet fleet ls"
            if info.get("etcd_env")
            else f"  fleet from a shell  : asterfleet fleet ls --etcd {info['etcd']}"
            f" --cluster {info['cluster']}"
        ),
    ]
    if info.get("console_url"):
        lines.append(f"  console             : {info['console_url']}")
        secret = password or f"(see {info['console_password_file']})"
        lines.append(f"  console login       : {info['console_user']} / {secret}")
    if info.get("capture"):
        lines.append(f"  HEP capture         : {info['capture']} (every SIP message via Kamailio)")
        if info.get("capture_db"):
            lines.append(
                f"  search the calls    : asterfleet capture search --db {info['capture_db']}"
            )
    if info.get("registry"):
        lines.append(f"  registry            : {info['registry']} (token server: the console)")
        lines.append(
            f"  knots and builds    : asterfleet knot ls --db {info['factory_db']}"
            "   (a factory worker runs them)"
        )
    lines.append(
        "  scale               : asterfleet lab scale N      stop: Ctrl-C or asterfleet lab down"
    )
    return "\n".join(lines)


def render(snap: dict[str, Any]) -> Group:
    nodes = Table(title="nodes", title_justify="left", header_style="bold", expand=False)
    for col in ("ID", "STATE", "AGENT", "OPERATOR", "WEIGHT", "CALLS NOW", "CALLS ROUTED", "URI"):
        nodes.add_column(col)
    for n in snap.get("nodes", []):
        style = STATE_STYLE.get(n["state"], "white")
        nodes.add_row(
            n["id"],
            Text(n["state"], style=style),
            n["agent_state"],
            n["operator"],
            str(n["weight"]),
            "-" if n["active_calls"] is None else str(n["active_calls"]),
            "-" if n.get("calls_routed") is None else str(n["calls_routed"]),
            n["sip_uri"],
        )
    bal = Table(title="balancers", title_justify="left", header_style="bold")
    for col in ("ID", "REVISION", "LIST HASH", "ROUTABLE/NODES", "RELOAD", "ERROR"):
        bal.add_column(col)
    for b in snap.get("balancers", []):
        bal.add_row(
            b["id"],
            str(b["revision"]),
            b["list_hash"],
            f"{b['routable']}/{b['nodes']}",
            Text("ok", style="green") if b["last_reload_ok"] else Text("failed", style="red"),
            b.get("last_error") or "-",
        )
    calls = snap.get("calls") or {}
    line = Text()
    if calls.get("error"):
        line.append(f"calls: {calls['error']}", style="red")
    elif calls:
        line.append(
            f"calls: {calls['rate']:g}/s   in progress {calls['current']}   "
            f"answered {calls['successful']}   "
        )
        line.append(f"failed {calls['failed']}", style="red" if calls["failed"] else "green")
    extra = []
    if snap.get("draining"):
        extra.append(Text(f"draining: {', '.join(snap['draining'])}", style="yellow"))
    if snap.get("etcd") != "ok":
        extra.append(Text(f"etcd: {snap.get('etcd')}", style="red"))
    for p in snap.get("problems", []):
        extra.append(Text(f"warning: {p}", style="yellow"))
    return Group(Panel(line, title="asterfleet lab", expand=False), nodes, bal, *extra)


def one_line(snap: dict[str, Any]) -> str:
    """A compact line for logs when stdout is not a terminal."""
    states: dict[str, int] = {}
    for n in snap.get("nodes", []):
        states[n["state"]] = states.get(n["state"], 0) + 1
    calls = snap.get("calls") or {}
    return (
        f"nodes={sum(states.values())} "
        + " ".join(f"{k}={v}" for k, v in sorted(states.items()))
        + f" answered={calls.get('successful', '-')} failed={calls.get('failed', '-')}"
        + f" in_progress={calls.get('current', '-')}"
    )
