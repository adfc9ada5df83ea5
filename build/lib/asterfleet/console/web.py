"""Rendering pages: the Jinja2 environment, its filters, and the shared context."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from asterfleet import __version__
from asterfleet.console.security import Principal
from asterfleet.console.state import console_state

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

STATE_CLASSES = {
    "active": "ok",
    "starting": "info",
    "draining": "warn",
    "maintenance": "maint",
    "unhealthy": "bad",
}


def fmt_age(seconds: float | None) -> str:
    """Compact age for a table cell: 42s, 7m03s, 5h12m, 3d04h."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_time(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def state_class(state: str) -> str:
    return STATE_CLASSES.get(state, "muted")


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.filters["age"] = fmt_age
    env.filters["when"] = fmt_time
    env.filters["state_class"] = state_class
    env.globals["version"] = __version__
    return templates


def render(
    request: Request,
    template: str,
    user: Principal | None,
    area: str = "",
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    st = console_state(request)
    ctx = {
        "user": user,
        "area": area,
        "areas": [a for a in st.areas if a.in_nav],
        "cluster": st.ks.cluster,
        "csrf_token": user.csrf_token if user else "",
        "now": time.time(),
        **context,
    }
    return st.templates.TemplateResponse(request, template, ctx, status_code=status_code)
