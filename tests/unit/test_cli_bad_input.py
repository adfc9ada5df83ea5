"""Every command's options refuse bad values while the command line is
parsed: one line naming the option, exit code 2, before anything runs.

The commands and options are enumerated from the CLI itself, so a new
command or option of a known kind (a port, a listen address, a cluster
name, a log level, a count) cannot skip the check.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer._click.exceptions as click_errors
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from asterfleet.cli import main as cli_main
from asterfleet.registry.config import write_config

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
        ("registry config", "--debug-listen"),
        ("registry serve", "--metrics-listen"),
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
    member_tools = {"etcd doctor", "etcd rejoin", "etcd discovery new", "etcd discovery show"}
    checked = set()
    for path, cmd in COMMANDS.items():
        names = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--etcd" in names or "--endpoints" in names or path in member_tools:
            assert {"--etcd-cacert", "--etcd-cert", "--etcd-key", "--etcd-user"} <= names, path
            assert "--etcd-password" not in names, path  # never on argv
            checked.add(path)
    assert member_tools <= checked


# Inputs only found bad when the command runs (a file, a database, a port):
# the real CLI in a subprocess, one line on stderr, exit 2, no traceback.
NOT_WRITABLE = "/proc/asterfleet-no/such.file"  # /proc refuses new files, even to root
ENV_FOR_RUN = {"ASTERFLEET_AMI_SECRET": "s3cret-ami", "ASTERFLEET_VRRP_PASS": "abcdef"}


def _run_cases(tmp: Path, busy_port: int) -> list[tuple[str, list[str], str]]:
    text_file = tmp / "notes.txt"
    text_file.write_text("not a database\n")
    registry_dir = tmp / "registry"
    write_config(registry_dir, "http://127.0.0.1:1/token", "reg")
    return [
        ("kamailio --out", ["kamailio", "config", "--out", NOT_WRITABLE], "--out"),
        (
            "vip --output",
            [
                "vip",
                "config",
                "--output",
                NOT_WRITABLE,
                "--vip",
                "10.0.0.9/24",
                "--interface",
                "eth0",
                "--peer",
                "10.0.0.3",
                "--priority",
                "100",
                "--unicast-src",
                "10.0.0.2",
            ],
            "--output",
        ),
        (
            "registry --out",
            [
                "registry",
                "config",
                "--out",
                NOT_WRITABLE,
                "--realm",
                "http://127.0.0.1:1/token",
                "--service",
                "reg",
            ],
            "--out",
        ),
        (
            "registry workers metrics port in use",
            [
                "registry",
                "serve",
                "--config-dir",
                str(registry_dir),
                "--db",
                str(tmp / "f.db"),
                "--console-db",
                str(tmp / "c.db"),
                "--workers",
                "2",
                "--metrics-listen",
                f"127.0.0.1:{busy_port}",
            ],
            "--metrics-listen",
        ),
        (
            "asterisk --out",
            ["asterisk", "config", "--out", NOT_WRITABLE, "--balancer", "10.0.0.2", "--node", "a1"],
            "--out",
        ),
        ("db directory", ["capture", "search", "--db", str(tmp)], "--db"),
        ("db text file", ["capture", "search", "--db", str(text_file)], "--db"),
        ("users db text file", ["users", "ls", "--db", str(text_file)], "--db"),
        (
            "db refused postgres",
            ["capture", "search", "--db", "postgresql://u:pw@127.0.0.1:1/x"],
            "--db",
        ),
        (
            "balancer rpc ftp",
            ["balancer", "run", "--rpc", "ftp://x/y", "--list-file", str(tmp / "d.list")],
            "--rpc",
        ),
        (
            "metrics port in use",
            [
                "balancer",
                "run",
                "--rpc",
                str(tmp / "k.sock"),
                "--list-file",
                str(tmp / "d.list"),
                "--metrics-listen",
                f"127.0.0.1:{busy_port}",
                "--etcd",
                "127.0.0.1:1",
            ],
            "--metrics-listen",
        ),
        (
            "balancer metrics token file missing",
            [
                "balancer",
                "run",
                "--rpc",
                str(tmp / "k.sock"),
                "--list-file",
                str(tmp / "d.list"),
                "--metrics-listen",
                f"127.0.0.1:{busy_port}",
                "--metrics-token-file",
                str(tmp / "absent.token"),
                "--etcd",
                "127.0.0.1:1",
            ],
            "--metrics-token-file",
        ),
        (
            "worker metrics port in use",
            [
                "factory",
                "worker",
                "--registry",
                "127.0.0.1:1",
                "--db",
                str(tmp / "f.db"),
                "--console-db",
                str(tmp / "c.db"),
                "--metrics-port",
                str(busy_port),
            ],
            "--metrics-port",
        ),
    ]


RUN_CASE_IDS = [
    "kamailio --out",
    "vip --output",
    "registry --out",
    "registry workers metrics port in use",
    "asterisk --out",
    "db directory",
    "db text file",
    "users db text file",
    "db refused postgres",
    "balancer rpc ftp",
    "metrics port in use",
    "balancer metrics token file missing",
    "worker metrics port in use",
]


@pytest.mark.parametrize("case_id", RUN_CASE_IDS)
def test_a_bad_input_found_while_running_is_one_line(tmp_path: Path, case_id: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = {c[0]: c for c in _run_cases(tmp_path, busy.getsockname()[1])}
        _, args, option = cases[case_id]
        r = subprocess.run(
            [sys.executable, "-m", "asterfleet", *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **ENV_FOR_RUN},
        )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and option in lines[0], r.stderr
    assert set(RUN_CASE_IDS) == set(cases)
