"""The `asterfleet` command: one sub-command per area of the system.

An area's module is imported only when that area runs: `asterfleet --version`
imports none of them, `asterfleet fleet ls` only the fleet's, and the node
agent beside every Asterisk box does not pay for the console, Alembic or the
registry. `--help` lists every area from :data:`AREAS` without importing any.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

import typer

# Typer (pinned) vendors click; its classes and exceptions live here.
import typer._click as click
import typer._click.exceptions as typer_click
from typer.core import TyperCommand, TyperGroup

from asterfleet import __version__


@dataclass(frozen=True)
class Area:
    name: str  # the sub-command
    module: str  # imported when the area runs
    attribute: str  # in that module: a Typer app, or the function of a single command
    help: str  # the line `asterfleet --help` shows (the area's own help starts with it)


# Every area, in the order `--help` lists them. Add one line per area.
AREAS: tuple[Area, ...] = (
    Area(
        "console",
        "asterfleet.cli.console",
        "run",
        "Serve the web console: the fleet live, drain/undrain/weight, balancers, events, "
        "and the JSON API at /api/v1 (OpenAPI at /api/openapi.json).",
    ),
    Area("node", "asterfleet.cli.node", "app", "The node agent, run beside each Asterisk box."),
    Area(
        "balancer",
        "asterfleet.cli.balancer",
        "app",
        "The balancer agent, run beside each Kamailio.",
    ),
    Area(
        "fleet",
        "asterfleet.cli.fleet",
        "app",
        "See and steer the fleet: list nodes, drain and undrain them, change weights.",
    ),
    Area("kamailio", "asterfleet.cli.kamailio", "app", "Kamailio for the load-balancer role."),
    Area(
        "lab",
        "asterfleet.cli.lab",
        "app",
        "Run the whole cluster on this machine: etcd, Kamailio, nodes with their agents, "
        "console, calls.",
    ),
    Area(
        "capture",
        "asterfleet.cli.capture",
        "app",
        "Capture SIP: a HEP v3 server fed by Kamailio (siptrace) and Asterisk (res_hep), "
        "with search and PCAP export.",
    ),
    Area(
        "asterisk",
        "asterfleet.cli.asterisk",
        "app",
        "Render configuration files for the Asterisk boxes of the fleet.",
    ),
    Area("etcd", "asterfleet.cli.etcd", "app", "Diagnose and repair etcd membership."),
    Area(
        "vip",
        "asterfleet.cli.vip",
        "app",
        "The virtual IP in front of the load balancers (keepalived, VRRP).",
    ),
    Area(
        "users",
        "asterfleet.cli.users",
        "app",
        "Users, API tokens and registry grants: one login for the console, its API and "
        "the image registry.",
    ),
    Area(
        "registry",
        "asterfleet.cli.registry",
        "app",
        "The image registry: asterfleet is the token server of the CNCF Distribution "
        "registry (`docker-registry`).",
    ),
    Area("knot", "asterfleet.cli.knot", "app", "Knots: build definitions of the image factory."),
    Area("factory", "asterfleet.cli.knot", "factory_app", "The image factory's worker."),
    Area(
        "rollout",
        "asterfleet.cli.rollout",
        "app",
        "Roll a new Asterisk version or image over a cluster, one node at a time: drain, "
        "wait until idle, replace the box, gate it with test calls, undrain.",
    ),
)
BY_NAME = {area.name: area for area in AREAS}


def load(area: Area, markup_mode: Any = "markdown") -> click.Command:
    """The area's command, its module imported now."""
    target = getattr(importlib.import_module(area.module), area.attribute)
    if isinstance(target, typer.Typer):
        # A group even with one command (`node run`), as when added to the root
        # app: its markup, and no completion options of its own.
        target.rich_markup_mode = markup_mode
        command: click.Command = typer.main.get_group(target)
    else:
        single = typer.Typer(rich_markup_mode=markup_mode, add_completion=False)
        single.command(area.name)(target)  # its help is the function's docstring
        command = typer.main.get_command(single)
    command.name = area.name
    return command


class Areas(TyperGroup):
    """The top-level group: it knows the areas by :data:`AREAS` and imports an
    area's module only to run it (or to show that area's own help)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.listing = False
        # What `--help` lists and what "Did you mean …?" suggests from.
        for area in AREAS:
            self.commands[area.name] = TyperCommand(area.name, help=area.help)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        area = BY_NAME.get(cmd_name)
        if area is None or self.listing:
            return super().get_command(ctx, cmd_name)
        command = load(area, self.rich_markup_mode)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self.listing = False


app = typer.Typer(
    name="asterfleet",
    cls=Areas,
    help=(
        "Build, ship and run a highly available Asterisk cluster.\n\n"
        "Asterisk boxes announce themselves in etcd (`asterfleet node run`); "
        "Kamailio load balancers follow the fleet (`asterfleet balancer run`); "
        "operators steer it (`asterfleet fleet ls`, `drain`, `weight`). "
        "Every option can also be set with an ASTERFLEET_<OPTION> environment "
        "variable."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"asterfleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    pass


def main() -> None:
    """Console entry point: usage errors exit 2 with one clear line."""
    try:
        # Without standalone mode the parser returns the exit code instead
        # of exiting: pass it on, scripts depend on it.
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except typer_click.UsageError as exc:
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        sys.stderr.write(f"error: {exc.format_message()}{hint}\n")
        sys.exit(2)
    except typer_click.ClickException as exc:
        sys.stderr.write(f"error: {exc.format_message()}\n")
        sys.exit(exc.exit_code)
