"""Rendering and validation of the load-balancer kamailio.cfg (no Kamailio run)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from asterfleet.errors import UsageError
from asterfleet.kamailio.config import ALGORITHMS, KamailioConfig, render_config, validate

BASE = Path("/tmp/afk-unit")


def make(**changes: Any) -> KamailioConfig:
    fields: dict[str, Any] = {
        "list_file": BASE / "dispatcher.list",
        "rpc_socket": BASE / "rpc.sock",
        "runtime_dir": BASE,
        "mpath": "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    }
    fields.update(changes)
    return KamailioConfig(**fields)


def modparams(text: str) -> dict[tuple[str, str], str]:
    found = re.findall(r'^modparam\("([^"]+)", "([^"]+)", (.+)\)$', text, re.M)
    return {(mod, name): value for mod, name, value in found}


def loaded(text: str) -> set[str]:
    return set(re.findall(r'^loadmodule "([a-z_]+)\.so"$', text, re.M))


@pytest.mark.parametrize(
    ("algorithm", "number", "call_load"),
    [("weight", 9, False), ("least-calls", 10, True), ("round-robin", 4, False)],
)
def test_algorithm_is_rendered(algorithm: str, number: int, call_load: bool) -> None:
    text = render_config(make(algorithm=algorithm, set_id=3))
    assert f'ds_select_dst("3", "{number}")' in text
    params = modparams(text)
    assert (("dispatcher", "ds_hash_size") in params) is call_load
    assert ("ds_load_update();" in text) is call_load
    assert ("ds_load_unset();" in text) is call_load
    assert ALGORITHMS[algorithm] == number


def test_defaults_render_a_production_balancer() -> None:
    text = render_config(make())
    params = modparams(text)
    assert text.startswith("#!KAMAILIO")
    assert params[("tm", "fr_timer")] == "2000"
    assert params[("tm", "fr_inv_timer")] == "40000"
    assert params[("dispatcher", "reload_delta")] == "0"
    assert params[("dispatcher", "ds_probing_mode")] == "1"
    assert params[("dispatcher", "ds_probing_threshold")] == "1"
    assert params[("dispatcher", "ds_inactive_threshold")] == "1"
    assert params[("dispatcher", "ds_ping_interval")] == "1"
    assert params[("dispatcher", "flags")] == "2"
    assert params[("dispatcher", "list_file")] == '"/tmp/afk-unit/dispatcher.list"'
    assert params[("dispatcher", "attrs_pvname")] == '"$avp(dsattrs)"'
    codes = params[("dispatcher", "ds_ping_reply_codes")]
    assert "class=2" in codes and "code=404" in codes
    assert "503" not in codes and "408" not in codes and "class=5" not in codes
    assert params[("jsonrpcs", "transport")] == "4"
    assert params[("jsonrpcs", "dgram_socket")] == '"/tmp/afk-unit/rpc.sock"'
    assert params[("ctl", "binrpc")] == '"unix:/tmp/afk-unit/kamailio_ctl"'
    assert 'run_dir="/tmp/afk-unit"' in text
    assert "listen=udp:127.0.0.1:5060\n" in text and "listen=tcp:127.0.0.1:5060\n" in text
    assert "record_route();" in text and "loose_route()" in text
    assert 'send_reply("503", "Service Unavailable")' in text
    assert 't_reply("503", "Service Unavailable")' in text
    assert 'ds_mark_dst("ip")' in text and "ds_next_dst()" in text
    assert '"404", "Not here"' in text  # only for in-dialog strays, never for no-destination
    assert "siptrace" not in loaded(text) and "xhttp" not in loaded(text)


def test_capture_on_loads_siptrace_with_hep3() -> None:
    text = render_config(make(capture="127.0.0.1:9060", capture_id=42))
    params = modparams(text)
    assert "siptrace" in loaded(text)
    assert params[("siptrace", "duplicate_uri")] == '"sip:127.0.0.1:9060"'
    assert params[("siptrace", "hep_version")] == "3"
    assert params[("siptrace", "hep_mode_on")] == "1"
    assert params[("siptrace", "hep_capture_id")] == "42"
    assert params[("siptrace", "trace_mode")] == "1"


def test_rpc_http_adds_xhttp_listener() -> None:
    text = render_config(make(rpc_http="127.0.0.1:8090"))
    assert "xhttp" in loaded(text)
    assert modparams(text)[("jsonrpcs", "transport")] == "5"
    assert "listen=tcp:127.0.0.1:8090" in text
    assert "tcp_accept_no_cl=yes" in text
    assert "jsonrpc_dispatch();" in text


def test_listen_advertise_and_udp_only() -> None:
    text = render_config(
        make(listen=["udp:10.0.0.5:5070"], advertise="203.0.113.7:5060", children=8)
    )
    assert "listen=udp:10.0.0.5:5070 advertise 203.0.113.7:5060" in text
    assert "disable_tcp=yes" in text
    assert "children=8" in text


def test_log_level_names_and_numbers() -> None:
    assert "debug=3\n" in render_config(make(log_level="debug"))
    assert "debug=-1\n" in render_config(make(log_level=-1))


def test_rendering_is_deterministic_and_config_hashable() -> None:
    cfg = make(listen=["udp:127.0.0.1:5060"])
    assert render_config(cfg) == render_config(dataclasses.replace(cfg))
    assert hash(cfg) == hash(make(listen=("udp:127.0.0.1:5060",)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"algorithm": "random"}, "unknown dispatcher algorithm 'random'"),
        ({"listen": []}, "at least one listen socket"),
        ({"listen": ["127.0.0.1:5060"]}, "expected PROTO:HOST:PORT"),
        ({"listen": ["tls:127.0.0.1:5061"]}, "expected PROTO:HOST:PORT"),
        ({"listen": ["udp:127.0.0.1:70000"]}, "port must be a number"),
        ({"listen": ["udp:bad host:5060"]}, "not a host name"),
        ({"listen": ["udp:127.0.0.1:5060", "udp:127.0.0.1:5060"]}, "given twice"),
        ({"advertise": "1.2.3.4"}, "advertise address"),
        ({"capture": "collector"}, "capture address"),
        ({"rpc_http": "127.0.0.1:5060"}, "also a SIP tcp listen socket"),
        ({"set_id": -1}, "set_id must be an integer"),
        ({"probing_interval": 0}, "probing_interval"),
        ({"fr_timer_ms": 50}, "fr_timer_ms"),
        ({"fr_inv_timer_ms": 1000}, "fr_inv_timer_ms"),
        ({"children": 0}, "children"),
        ({"capture_id": -5}, "capture_id"),
        ({"log_level": "chatty"}, "unknown Kamailio log level"),
        ({"log_level": 9}, "log_level"),
        ({"list_file": Path("relative/dispatcher.list")}, "must be an absolute path"),
        ({"rpc_socket": Path("/tmp/with space/rpc.sock")}, "must not contain spaces"),
        ({"rpc_socket": Path("/tmp/" + "x" * 120 + "/rpc.sock")}, "unix socket paths"),
        ({"rpc_socket_user": "Bad User"}, "rpc socket user 'Bad User'"),
        ({"rpc_socket_user": "a", "rpc_socket_group": 'g"'}, "rpc socket group"),
        ({"rpc_socket_group": "asterfleet"}, "group given without a user"),
    ],
)
def test_validation_errors(changes: dict[str, Any], message: str) -> None:
    cfg = make(**changes)
    with pytest.raises(UsageError, match=re.escape(message)):
        validate(cfg)
    with pytest.raises(UsageError):
        render_config(cfg)


def test_ipv6_listen_is_rendered_with_its_advertised_address() -> None:
    cfg = make(listen=["udp:[::1]:5060"], advertise="[2001:db8::1]:5060")
    validate(cfg)
    lines = render_config(cfg).splitlines()
    # Kamailio binds [::1] and writes 2001:db8::1 into Via and Record-Route.
    # (tests/integration/test_kamailio_config_real.py runs it over IPv6.)
    assert "listen=udp:[::1]:5060 advertise [2001:db8::1]:5060" in lines


@pytest.mark.parametrize(
    ("user", "group", "expected"),
    [
        (None, None, None),
        ("asterfleet", None, ("asterfleet", "asterfleet")),
        ("asterfleet", "kamailio", ("asterfleet", "kamailio")),
        ("10001", "10001", ("10001", "10001")),
    ],
)
def test_the_rpc_socket_owner_is_rendered_when_given(
    user: str | None, group: str | None, expected: tuple[str, str] | None
) -> None:
    params = modparams(render_config(make(rpc_socket_user=user, rpc_socket_group=group)))
    owner = (params.get(("jsonrpcs", "dgram_user")), params.get(("jsonrpcs", "dgram_group")))
    assert owner == (tuple(f'"{v}"' for v in expected) if expected else (None, None))


def test_free_bind_comes_before_the_listen_sockets_and_only_when_asked() -> None:
    assert "ip_free_bind" not in render_config(make())
    lines = render_config(make(free_bind=True)).splitlines()
    first_listen = next(i for i, line in enumerate(lines) if line.startswith("listen="))
    assert lines.index("ip_free_bind=1") < first_listen


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["--free-bind", "--rpc-socket-owner", "asterfleet"], 0,
         ['ip_free_bind=1', 'modparam("jsonrpcs", "dgram_user", "asterfleet")',
          'modparam("jsonrpcs", "dgram_group", "asterfleet")']),
        (["--rpc-socket-owner", "asterfleet:kamailio"], 0,
         ['modparam("jsonrpcs", "dgram_group", "kamailio")']),
        (["--rpc-socket-owner", "asterfleet:"], 2, ["expected USER or USER:GROUP"]),
        (["--rpc-socket-owner", ":kamailio"], 2, ["expected USER or USER:GROUP"]),
        (["--rpc-socket-owner", "Bad User"], 2, ["rpc socket user 'Bad User'"]),
    ],
)  # fmt: skip
def test_cli_free_bind_and_rpc_socket_owner(
    argv: list[str], code: int, expected: list[str]
) -> None:
    from typer.testing import CliRunner

    from asterfleet.cli.kamailio import app

    done = CliRunner().invoke(app, argv)  # its only command: no name
    assert done.exit_code == code, done.output
    for text in expected:
        assert text in done.output


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("10.0.0.5:9060", "10.0.0.5:9060"),
        ("[2001:db8::5]:9060", "[2001:db8::5]:9060"),
        ("localhost:9060", "127.0.0.1:9060"),  # /etc/hosts: no DNS query
    ],
)
def test_a_capture_name_is_resolved_when_the_config_is_rendered(given: str, expected: str) -> None:
    from asterfleet.kamailio.config import resolve_capture

    assert resolve_capture(given) == expected


def test_a_capture_name_that_does_not_resolve_leaves_capture_off_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The balancer must start when the capture Service is missing: Kamailio
    is rendered without siptrace and the operator is told why."""
    import socket

    from typer.testing import CliRunner

    from asterfleet.cli.kamailio import app

    def no_dns(host: str, *_a: object, **_k: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    base = ["--list-file", "/tmp/d.list", "--rpc-socket", "/tmp/r.sock"]
    done = CliRunner().invoke(app, [*base, "--capture", "capture:9060"])
    assert done.exit_code == 0, done.output
    assert "warning: --capture 'capture:9060': cannot resolve 'capture'" in done.output
    assert 'loadmodule "siptrace.so"' not in done.output
    with_capture = CliRunner().invoke(app, [*base, "--capture", "10.0.0.5:9060"])
    assert 'loadmodule "siptrace.so"' in with_capture.output
    bad = CliRunner().invoke(app, [*base, "--capture", "bad host:9060"])
    assert bad.exit_code == 2
    assert "(write IPv6 as [addr]:port)" in bad.output  # printed as text, not markup
