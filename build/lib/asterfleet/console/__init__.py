"""The asterfleet web console: fleet, balancers, events, and a JSON API.

Server-rendered pages (Jinja2) with a small hand-written script for live
updates over server-sent events; no build step, no external assets.
"""

from asterfleet.console.app import create_app
from asterfleet.console.settings import ConsoleSettings

__all__ = ["ConsoleSettings", "create_app"]
