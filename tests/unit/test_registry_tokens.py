"""Signing material, JWT claims, login limiting and password checks."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
from cryptography import x509

from asterfleet.errors import UsageError
from asterfleet.registry import keys
from asterfleet.registry.config import (
    RegistryConfig,
    debug_address,
    read_settings,
    render_config,
    write_config,
)
from asterfleet.registry.scope import Scope
from asterfleet.registry.tokens import Issuer


@pytest.fixture(scope="module")
def material() -> keys.SigningMaterial:
    return keys.generate()


def test_kid_is_a_libtrust_fingerprint(material: keys.SigningMaterial) -> None:
    assert re.fullmatch(r"([A-Z2-7]{4}:){11}[A-Z2-7]{4}", material.kid)


def test_key_round_trips_through_files(material: keys.SigningMaterial, tmp_path: Path) -> None:
    key_path, _ = keys.write(material, tmp_path)
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert keys.load(tmp_path).kid == material.kid


def test_token_claims_and_headers(material: keys.SigningMaterial) -> None:
    issuer = Issuer(material, "asterfleet", "registry.test", ttl=300)
    token = issuer.issue("alice", [Scope("repository", "alice/app", ("pull", "push"))])
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == material.kid
    cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    assert cert == material.certificate
    claims = issuer.decode(token)
    assert {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 300
    assert claims["access"] == [
        {"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}
    ]


def test_registry_config(tmp_path: Path) -> None:
    cfg = RegistryConfig(
        realm="http://127.0.0.1:5001/token",
        service="reg",
        issuer="iss",
        rootcertbundle=tmp_path / "c.crt",
        storage_dir=tmp_path / "s",
        notify_url="http://127.0.0.1:5001/hooks/registry",
        notify_secret="xyz",
    )
    text = render_config(cfg)
    assert 'realm: "http://127.0.0.1:5001/token"' in text
    assert 'rootcertbundle: "' + str(tmp_path / "c.crt") + '"' in text
    assert 'Authorization: ["Bearer xyz"]' in text
    # Distribution's debug listener (metrics and pprof, no login) is off unless asked for.
    assert "debug:" not in text
    debug = render_config(replace(cfg, debug_listen=":5002"))
    assert '  debug:\n    addr: "127.0.0.1:5002"\n    prometheus:\n      enabled: true' in debug


@pytest.mark.parametrize(
    ("given", "address"),
    [(":5002", "127.0.0.1:5002"), ("10.0.0.5:5002", "10.0.0.5:5002"), ("[::1]:5002", "[::1]:5002")],
)
def test_the_debug_listener_is_loopback_unless_a_host_is_named(given: str, address: str) -> None:
    assert debug_address(given) == address


@pytest.mark.parametrize("bad", ["5002", ":", "host:", ":99999", ":0"])
def test_a_bad_debug_listener_is_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="--debug-listen"):
        debug_address(bad)


def test_write_config_keeps_the_key(tmp_path: Path) -> None:
    first = write_config(tmp_path, "http://127.0.0.1:1/token", "svc")
    kid = keys.load(tmp_path).kid
    again = write_config(tmp_path, "http://127.0.0.1:1/token", "svc")
    assert keys.load(tmp_path).kid == kid
    assert first.notify_secret == again.notify_secret == read_settings(tmp_path).notify_secret
    assert (tmp_path / "notify-secret").stat().st_mode & 0o777 == 0o600
