"""The `asterfleet` command: one sub-command per area of the system."""

from __future__ import annotations

import importlib
import sys

import typer

# Typer (pinned) vendors click; its exceptions live here.
import typer._click.exceptions as typer_click

from asterfleet import __version__

app = typer.Typer(
    name="asterfleet",
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


def _register() -> None:
    # Each area registers its own Typer app; imported here so `--help` lists
    # them all. Add one line per area.
    import asterfleet.cli.balancer
    import asterfleet.cli.fleet
    import asterfleet.cli.kamailio
    import asterfleet.cli.node

    app.add_typer(asterfleet.cli.node.app, name="node")
    app.add_typer(asterfleet.cli.balancer.app, name="balancer")
    app.add_typer(asterfleet.cli.fleet.app, name="fleet")
    app.add_typer(asterfleet.cli.kamailio.app, name="kamailio")
    app.add_typer(importlib.import_module("asterfleet.cli.lab").app, name="lab")
    app.add_typer(importlib.import_module("asterfleet.cli.capture").app, name="capture")
    app.add_typer(importlib.import_module("asterfleet.cli.asterisk").app, name="asterisk")
    app.add_typer(importlib.import_module("asterfleet.cli.etcd").app, name="etcd")
    app.add_typer(importlib.import_module("asterfleet.cli.vip").app, name="vip")
    app.command("console")(importlib.import_module("asterfleet.cli.console").run)
    app.add_typer(importlib.import_module("asterfleet.cli.users").app, name="users")
    app.add_typer(importlib.import_module("asterfleet.cli.registry").app, name="registry")
    app.add_typer(importlib.import_module("asterfleet.cli.knot").app, name="knot")
    app.add_typer(importlib.import_module("asterfleet.cli.knot").factory_app, name="factory")


def main() -> None:
    """Console entry point: usage errors exit 2 with one clear line."""
    _register()
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
