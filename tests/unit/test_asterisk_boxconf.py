"""`asterfleet asterisk config`: a fleet box's whole Asterisk configuration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from asterfleet.asterisk.boxconf import (
    AGENT_ENDPOINT,
    BALANCER_ENDPOINT,
    MODULES,
    BoxConfig,
    balancer_addresses,
    render_box_config,
)
from asterfleet.capture.hepconf import HepConf
from asterfleet.errors import UsageError
from asterfleet.fleet.model import BalancerStatus

BASE = BoxConfig(balancers=("10.0.0.2", "10.0.0.3"), ami_secret="s3cret", agent_address="10.0.0.11")


def section(text: str, name: str, kind: str | None = None) -> list[str]:
    """The lines of the [name] section (of ``type = kind`` when given)."""
    out: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("["):
            current = [] if line.split("]")[0][1:] == name else None
            if current is not None:
                out.append(current)
        elif current is not None and line and not line.startswith(";"):
            current.append(line)
    for lines in out:
        if kind is None or f"type = {kind}" in lines:
            return lines
    raise AssertionError(f"no [{name}] section of type {kind}")


def test_every_file_is_rendered() -> None:
    files = render_box_config(BASE)
    assert set(files) == {
        "asterisk.conf",
        "modules.conf",
        "pjsip.conf",
        "manager.conf",
        "extensions.conf",
        "rtp.conf",
        "logger.conf",
        "hep.conf",
    }


def test_directories_are_a_real_section_following_the_prefix() -> None:
    text = render_box_config(replace(BASE, prefix="/opt/ast22", config_dir="/cfg"))["asterisk.conf"]
    assert "\n[directories]\n" in text and "\n[directories](!)" not in text
    dirs = section(text, "directories")
    assert "astetcdir => /cfg" in dirs
    assert "astdatadir => /opt/ast22/var/lib/asterisk" in dirs
    assert "astmoddir => /opt/ast22/lib/asterisk/modules" in dirs
    usr = render_box_config(BASE)["asterisk.conf"]
    assert "astdatadir => /var/lib/asterisk" in usr


def test_only_the_balancers_reach_the_dialplan() -> None:
    pjsip = render_box_config(BASE)["pjsip.conf"]
    ident = section(pjsip, BALANCER_ENDPOINT, "identify")
    assert ident.count("match = 10.0.0.2") == 1 and "match = 10.0.0.3" in ident
    endpoint = section(pjsip, BALANCER_ENDPOINT, "endpoint")
    assert "direct_media = no" in endpoint and "context = from-balancers" in endpoint
    # The agent's probe is identified too, in a context without extensions.
    assert "match = 10.0.0.11" in section(pjsip, AGENT_ENDPOINT, "identify")
    assert "context = asterfleet-probe" in section(pjsip, AGENT_ENDPOINT, "endpoint")


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ([], ()),
        ([()], ()),
        ([("10.0.0.3",), ("10.0.0.2",)], ("10.0.0.2", "10.0.0.3")),
        ([("10.0.0.2", "fd00::2"), ("10.0.0.2",)], ("10.0.0.2", "fd00::2")),
    ],
)
def test_balancer_addresses_from_their_records(
    published: list[tuple[str, ...]], expected: tuple[str, ...]
) -> None:
    records = [BalancerStatus(id=f"lb{i}", sip_addresses=a) for i, a in enumerate(published)]
    assert balancer_addresses(records) == expected


def test_records_published_by_balancers_identify_them_in_pjsip() -> None:
    records = [
        BalancerStatus.model_validate_json(BalancerStatus(id=name, sip_addresses=(addr,)).to_json())
        for name, addr in (("lb2", "10.0.0.3"), ("lb1", "10.0.0.2"))
    ]
    cfg = replace(BASE, balancers=balancer_addresses(records))
    ident = section(render_box_config(cfg)["pjsip.conf"], BALANCER_ENDPOINT, "identify")
    assert [line for line in ident if line.startswith("match")] == [
        "match = 10.0.0.2",
        "match = 10.0.0.3",
    ]


def test_an_agent_on_a_balancer_address_needs_no_endpoint_of_its_own() -> None:
    pjsip = render_box_config(replace(BASE, balancers=("10.0.0.0/24",)))["pjsip.conf"]
    assert f"[{AGENT_ENDPOINT}]" not in pjsip


def test_nat_addresses() -> None:
    pjsip = render_box_config(
        replace(BASE, external_address="203.0.113.7", local_nets=("10.0.0.0/8",))
    )["pjsip.conf"]
    transport = section(pjsip, "transport-udp")
    assert "external_media_address = 203.0.113.7" in transport
    assert "external_signaling_address = 203.0.113.7" in transport
    assert "local_net = 10.0.0.0/8" in transport


def test_manager_least_privilege() -> None:
    manager = render_box_config(BASE)["manager.conf"]
    general = section(manager, "general")
    assert "displayconnects = no" in general and "bindaddr = 0.0.0.0" in general
    user = section(manager, "asterfleet")
    assert "read = call" in user and "write = reporting" in user
    assert "permit = 10.0.0.11/255.255.255.255" in user and "deny = 0.0.0.0/0.0.0.0" in user
    assert not any("command" in line for line in user)
    local = render_box_config(replace(BASE, agent_address="127.0.0.1"))["manager.conf"]
    assert "bindaddr = 127.0.0.1" in local


def test_modules_are_listed_explicitly_and_hep_only_with_a_capture() -> None:
    plain = render_box_config(BASE)["modules.conf"]
    assert "autoload = no" in plain
    assert re.findall(r"^load => (\S+)$", plain, re.M) == list(MODULES)
    assert "res_hep" not in plain
    hep = replace(BASE, capture=HepConf("10.0.0.5:9060", capture_name="ast1"))
    files = render_box_config(hep)
    assert "load => res_hep_pjsip.so" in files["modules.conf"]
    assert "capture_address = 10.0.0.5:9060" in files["hep.conf"]


def test_dialplan_includes_the_operators_file_and_a_gate_number() -> None:
    ext = render_box_config(BASE)["extensions.conf"]
    assert "include => fleet-dialplan" in section(ext, "from-balancers")
    assert "include => asterfleet-gate" in section(ext, "from-balancers")
    assert "exten => asterfleet-gate,1,Answer()" in section(ext, "asterfleet-gate")
    assert ext.rstrip().endswith('#tryinclude "dialplan.conf"')


def test_container_logs_to_stdout_only() -> None:
    logger = render_box_config(replace(BASE, container=True))["logger.conf"]
    assert "messages.log" not in logger and "console =>" in logger


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"balancers": ()}, "no load balancer address"),
        ({"balancers": ("lb1.example",)}, "balancer 'lb1.example'"),
        ({"agent_address": "localhost"}, "agent address"),
        ({"sip_port": 0}, "SIP port 0"),
        ({"rtp_start": 20000, "rtp_end": 10000}, "RTP ports"),
        ({"transports": ("tls",)}, "transport 'tls'"),
        ({"ami_secret": "a;b"}, "AMI secret"),
        ({"dialplan_file": "../x.conf"}, "dialplan file"),
        ({"prefix": "opt"}, "absolute path"),
    ],
)
def test_bad_settings_are_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        render_box_config(replace(BASE, **change))  # type: ignore[arg-type]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asterfleet", "asterisk", "config", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_cli_writes_the_files_with_the_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "ami.secret"
    secret.write_text("from-a-file\n")
    out = tmp_path / "etc"
    env = {"ASTERFLEET_AMI_SECRET_FILE": str(secret), "ASTERFLEET_AMI_SECRET": ""}
    done = run_cli("--out", str(out), "--balancer", "10.0.0.2", env=env)
    assert done.returncode == 0, done.stderr
    manager = (out / "manager.conf").read_text()
    assert "secret = from-a-file" in manager
    assert (out / "manager.conf").stat().st_mode & 0o777 == 0o640
    assert f"astetcdir => {out.resolve()}" in (out / "asterisk.conf").read_text()
    # Bad input: one line naming it, exit 2.
    bad = run_cli("--out", str(out), "--balancer", "lb.example", env=env)
    assert bad.returncode == 2
    assert "lb.example" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    no_secret = run_cli(
        "--out", str(out), "--balancer", "10.0.0.2", env={"ASTERFLEET_AMI_SECRET": ""}
    )
    assert no_secret.returncode == 2 and "ASTERFLEET_AMI_SECRET" in no_secret.stderr


def test_agent_may_stop_adds_command_and_says_why() -> None:
    manager = render_box_config(replace(BASE, agent_may_stop=True))["manager.conf"]
    assert "write = reporting,command" in section(manager, "asterfleet")
    assert "--on-idle stop" in manager
