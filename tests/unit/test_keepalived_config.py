"""keepalived.conf rendering for a balancer of the VIP pair."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from asterfleet.cli.vip import app as vip_app
from asterfleet.errors import UsageError
from asterfleet.vip.health import check_command, kamailio_healthy
from asterfleet.vip.keepalived import KeepalivedOptions, render_keepalived_conf, validate

BASE = KeepalivedOptions(
    interface="eth0",
    vip="10.0.0.100/24",
    peers=("10.0.0.12",),
    priority=150,
    auth_pass="s3cret",
    rpc="/run/asterfleet/kamailio_rpc.sock",
    router_id="lb1",
    unicast_src="10.0.0.11",
    notify="/usr/local/bin/vip-notify",
)


def _block(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(name))
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "}")
    return [line.strip() for line in lines[start + 1 : end] if not line.strip().startswith("#")]


def test_renders_unicast_vrrp_with_auth_health_check_and_notify() -> None:
    text = render_keepalived_conf(BASE)
    instance = _block(text, "vrrp_instance")
    assert "state BACKUP" in instance
    assert "nopreempt" in instance
    assert "priority 150" in instance
    assert "unicast_src_ip 10.0.0.11" in instance
    assert _block(text, "unicast_peer") == ["10.0.0.12"]
    assert _block(text, "authentication") == ["auth_type PASS", "auth_pass s3cret"]
    assert _block(text, "virtual_ipaddress") == ["10.0.0.100/24 dev eth0"]
    assert _block(text, "track_script") == ["chk_kamailio"]
    assert 'notify "/usr/local/bin/vip-notify"' in text
    script = _block(text, "vrrp_script")
    assert any("--rpc /run/asterfleet/kamailio_rpc.sock" in line for line in script)
    assert "fall 2" in script and "rise 2" in script
    assert "vrrp_version 2" in text  # v3 has no authentication


def test_preemption_choice_is_explained() -> None:
    text = render_keepalived_conf(BASE)
    assert "# nopreempt: a balancer that failed and returns stays BACKUP" in text
    preempting = render_keepalived_conf(replace(BASE, nopreempt=False))
    assert "nopreempt" not in _block(preempting, "vrrp_instance")
    assert "# Preemption on" in preempting


def test_rendering_is_deterministic() -> None:
    assert render_keepalived_conf(BASE) == render_keepalived_conf(replace(BASE))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vip": "10.0.0.100"}, "give the prefix"),
        ({"vip": "10.0.0.300/24"}, "not an IPv4"),
        ({"peers": ()}, "at least one --peer"),
        ({"peers": ("10.0.0.100",)}, "the VIP itself"),
        ({"peers": ("10.0.0.12", "10.0.0.12")}, "given twice"),
        ({"peers": ("peer-b",)}, "not an IPv4"),
        ({"priority": 0}, "--priority"),
        ({"priority": 255}, "--priority"),
        ({"virtual_router_id": 256}, "--virtual-router-id"),
        ({"auth_pass": ""}, "ASTERFLEET_VRRP_PASS"),
        ({"auth_pass": "123456789"}, "at most 8"),
        ({"auth_pass": 'a"b'}, "quotes"),
        ({"interface": "a-very-long-interface"}, "--interface"),
        ({"rpc": ""}, "--rpc"),
        # shlex.quote turns ' into '"'"', which ends the script "…" string.
        ({"rpc": "/run/k'amailio.sock"}, "--rpc"),
        # keepalived reads # and ! as the start of a comment.
        ({"auth_pass": "ab#cd"}, "VRRP password"),
        ({"auth_pass": "ab!cd"}, "VRRP password"),
        ({"notify": 'x" ; y'}, "--notify"),
        ({"unicast_src": "10.0.0.12"}, "own address"),
    ],
)
def test_bad_options_name_the_option(change: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate(replace(BASE, **change))  # type: ignore[arg-type]


VIP_TEXT = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda addr, prefix: f"{addr}/{prefix}",
        st.ip_addresses(v=4),
        st.integers(min_value=0, max_value=40),
    ),
)


@given(VIP_TEXT)
@example("10.0.0.100/24").via("accepted")
@example("10.0.0.12/24").via("the peer's address")
@example("10.0.0.11/24").via("this balancer's own address")
@example("10.0.0.100/33").via("no such prefix")
def test_a_vip_is_rendered_as_given_or_refused_naming_it(text: str) -> None:
    """What an operator sees: the address in keepalived.conf, or one line
    naming what they typed."""
    try:
        expected: ipaddress.IPv4Interface | None = ipaddress.IPv4Interface(text)
    except ValueError:
        expected = None
    own = {ipaddress.IPv4Address(a) for a in (*BASE.peers, BASE.unicast_src or "")}
    if "/" not in text or expected is None or expected.ip in own:
        with pytest.raises(UsageError) as refused:
            render_keepalived_conf(replace(BASE, vip=text))
        named = repr(text) if expected is None or "/" not in text else str(expected.ip)
        assert named in str(refused.value)
        return
    conf = render_keepalived_conf(replace(BASE, vip=text))
    assert _block(conf, "virtual_ipaddress") == [f"{expected.with_prefixlen} dev eth0"]


def test_check_command_goes_through_env() -> None:
    assert check_command("/venv/bin/python").startswith("/usr/bin/env /venv/bin/python -m ")


def test_health_of_a_missing_kamailio() -> None:
    healthy, why = kamailio_healthy("/nonexistent/af-kamailio.sock", timeout=0.2)
    assert not healthy and "/nonexistent/af-kamailio.sock" in why


def test_cli_takes_the_password_from_the_environment_only() -> None:
    runner = CliRunner()
    args = ["config", "--interface", "eth0", "--vip", "10.0.0.100/24"]
    args += ["--peer", "10.0.0.12", "--priority", "100", "--rpc", "/run/k.sock"]
    refused = runner.invoke(vip_app, args, env={"ASTERFLEET_VRRP_PASS": ""})
    assert refused.exit_code == 2
    assert "ASTERFLEET_VRRP_PASS" in refused.output
    done = runner.invoke(vip_app, args, env={"ASTERFLEET_VRRP_PASS": "pw"})
    assert done.exit_code == 0, done.output
    assert "auth_pass pw" in done.output
    assert "--auth-pass" not in done.output
    failed = runner.invoke(vip_app, ["check-kamailio", "--rpc", "/nonexistent/af.sock", "-q"])
    assert failed.exit_code == 1


@pytest.mark.parametrize(
    ("argv", "user"), [([], "root"), (["--script-user", "asterfleet"], "asterfleet")]
)
def test_cli_script_user(argv: list[str], user: str) -> None:
    args = ["config", "--interface", "eth0", "--vip", "10.0.0.100/24", "--peer", "10.0.0.12"]
    args += ["--priority", "100", "--rpc", "/run/k.sock", *argv]
    done = CliRunner().invoke(vip_app, args, env={"ASTERFLEET_VRRP_PASS": "pw"})
    assert done.exit_code == 0, done.output
    assert _block(done.output, "global_defs")[0] == f"script_user {user}"


def test_cli_refuses_a_bad_script_user() -> None:
    args = ["config", "--interface", "eth0", "--vip", "10.0.0.100/24", "--peer", "10.0.0.12"]
    args += ["--priority", "100", "--script-user", "no body"]
    done = CliRunner().invoke(vip_app, args, env={"ASTERFLEET_VRRP_PASS": "pw"})
    assert done.exit_code == 2
    assert "script user 'no body'" in done.output
