"""Every command's options refuse bad values while the command line is
parsed: one line naming the option, exit code 2, before anything runs.

The commands and options are enumerated from the CLI itself, so a new
command or option of a known kind (a port, a listen address, a cluster
name, a log level, a count) cannot skip the check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import typer._click.exceptions as click_errors
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from asterfleet.cli import main as cli_main

# Option-name pattern -> values that must be refused at parse time.
BAD_VALUES: list[tuple[str, list[str]]] = [
    (r"^--cluster$", ["../x", "a/b", ""]),
    (r"^--log-level$", ["loud"]),
    (r"(^--|-)port$", ["99999", "65536", "-1"]),
    (r"(^--listen$|-listen$|^--rpc-http$)", ["bogus", "127.0.0.1:99999", ":"]),
    (r"^--limit$", ["-1", "0"]),
]


def _commands() -> Iterator[tuple[str, TyperCommand]]:
    def walk(cmd: object, path: str) -> Iterator[tuple[str, TyperCommand]]:
        if isinstance(cmd, TyperGroup):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, f"{path} {name}".strip())
        elif isinstance(cmd, TyperCommand):
            yield path, cmd

    for area in cli_main.AREAS:  # every area the command line offers
        yield from walk(cli_main.load(area), area.name)


FILLERS = ("1", "x")  # a value most parameters take: a number, or a word


def _cases() -> Iterator[tuple[str, str, str]]:
    for path, cmd in _commands():
        for param in cmd.params:
            if not isinstance(param, TyperOption) or param.is_flag:
                continue
            name = max(param.opts, key=len)
            for pattern, values in BAD_VALUES:
                if re.search(pattern, name):
                    for value in values:
                        yield path, name, value


COMMANDS = dict(_commands())
CASES = list(_cases())


def test_the_table_covers_the_options_the_issue_names() -> None:
    seen = {(path, name) for path, name, _ in CASES}
    for expected in [
        ("fleet undrain", "--cluster"),
        ("node run", "--log-level"),
        ("registry serve", "--port"),
        ("factory worker", "--metrics-port"),
        ("registry config", "--listen"),
        ("kamailio config", "--rpc-http"),
        ("capture search", "--limit"),
        ("console", "--cluster"),
    ]:
        assert expected in seen, expected


@pytest.mark.parametrize(("path", "option", "value"), CASES)
def test_a_bad_value_is_refused_while_parsing(path: str, option: str, value: str) -> None:
    command = COMMANDS[path]
    args = [option, value]
    filled: dict[str, int] = {}
    for _ in range(20):  # fill required parameters until only ours is wrong
        try:
            command.make_context(path, list(args))
        except click_errors.MissingParameter as exc:
            assert exc.param is not None
            if isinstance(exc.param, TyperArgument):
                args.append(FILLERS[0])
            else:
                args = [max(exc.param.opts, key=len), FILLERS[0], *args]
            continue
        except click_errors.BadParameter as exc:
            assert exc.param is not None
            if option in exc.param.opts:
                return
            # A filler another parameter refused: try the next filler for it.
            name = max(exc.param.opts, key=len)
            tried = filled.get(name, 0) + 1
            assert tried < len(FILLERS), exc.format_message()
            filled[name] = tried
            where = args.index(name) + 1 if name in args else len(args) - 1
            args[where] = FILLERS[tried]
            continue
        pytest.fail(f"asterfleet {path} {option} {value!r} was accepted")
    pytest.fail("too many required parameters")


def test_every_etcd_command_takes_tls_and_a_user() -> None:
    for path, cmd in COMMANDS.items():
        names = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--etcd" in names and path != "etcd discovery new":
            assert {"--etcd-cacert", "--etcd-cert", "--etcd-key", "--etcd-user"} <= names, path
            assert "--etcd-password" not in names, path  # never on argv
