"""The /token endpoint as registry clients call it (GET with Basic auth,
OAuth2 POST with password and refresh_token grants)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asterfleet.factory.db import open_store
from asterfleet.registry.app import create_app
from asterfleet.registry.config import write_config
from asterfleet.registry.identity import SqlIdentity
from asterfleet.registry.tokens import Issuer

SERVICE = "registry.test"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, SqlIdentity, Issuer]]:
    settings = write_config(
        tmp_path / "cfg", "http://127.0.0.1:9/token", SERVICE, listen="127.0.0.1:9"
    )
    engine = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    identity = SqlIdentity(engine)
    identity.add_user("alice", "alice-password")
    identity.add_user("bob", "bob-password")
    app = create_app(settings, engine, reconcile_interval=3600, cache_seconds=0)
    from asterfleet.registry import keys

    issuer = Issuer(keys.load(tmp_path / "cfg"), SERVICE, SERVICE)
    with TestClient(app) as client:
        yield client, identity, issuer


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def access(issuer: Issuer, token: str) -> list[dict[str, object]]:
    claims = issuer.decode(token)
    return list(claims["access"])


def test_get_token_for_owner_and_stranger(setup: tuple[TestClient, SqlIdentity, Issuer]) -> None:
    client, _, issuer = setup
    params = {"service": SERVICE, "scope": "repository:alice/app:pull,push"}
    own = client.get("/token", params=params, headers=basic("alice", "alice-password"))
    assert own.status_code == 200
    body = own.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert body["issued_at"].endswith("Z") and "refresh_token" not in body
    assert access(issuer, body["token"])[0]["actions"] == ["pull", "push"]
    other = client.get("/token", params=params, headers=basic("bob", "bob-password"))
    assert access(issuer, other.json()["token"])[0]["actions"] == []


def test_repeated_scopes_and_login_probe(setup: tuple[TestClient, SqlIdentity, Issuer]) -> None:
    client, _, issuer = setup
    resp = client.get(
        "/token",
        params=[
            ("service", SERVICE),
            ("scope", "repository:alice/a:pull"),
            ("scope", "repository:bob/b:pull"),
            ("account", "alice"),
        ],
        headers=basic("alice", "alice-password"),
    )
    assert [a["actions"] for a in access(issuer, resp.json()["token"])] == [["pull"], []]
    probe = client.get(
        "/token", params={"service": SERVICE}, headers=basic("alice", "alice-password")
    )
    assert probe.status_code == 200 and access(issuer, probe.json()["token"]) == []


@pytest.mark.parametrize(
    ("params", "headers", "status"),
    [
        ({"service": SERVICE}, basic("alice", "nope"), 401),
        ({"service": "other"}, basic("alice", "alice-password"), 400),
        ({"service": SERVICE, "scope": "repository:Bad:pull"}, {}, 400),
        ({"service": SERVICE, "account": "bob"}, basic("alice", "alice-password"), 400),
        ({"service": SERVICE}, {"Authorization": "Basic !!!"}, 400),
    ],
)
def test_bad_requests(
    setup: tuple[TestClient, SqlIdentity, Issuer],
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    client, _, _ = setup
    resp = client.get("/token", params=params, headers=headers)
    assert resp.status_code == status
    assert resp.json()["errors"][0]["message"]


def test_failed_logins_are_rate_limited(setup: tuple[TestClient, SqlIdentity, Issuer]) -> None:
    client, _, _ = setup
    for _ in range(5):
        assert (
            client.get(
                "/token", params={"service": SERVICE}, headers=basic("alice", "wrong")
            ).status_code
            == 401
        )
    limited = client.get(
        "/token", params={"service": SERVICE}, headers=basic("alice", "alice-password")
    )
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    # Another user from the same address is not punished.
    assert (
        client.get(
            "/token", params={"service": SERVICE}, headers=basic("bob", "bob-password")
        ).status_code
        == 200
    )


def test_offline_token_then_refresh_grant(setup: tuple[TestClient, SqlIdentity, Issuer]) -> None:
    client, _, issuer = setup
    first = client.get(
        "/token",
        params={"service": SERVICE, "offline_token": "true"},
        headers=basic("alice", "alice-password"),
    ).json()
    refresh = first["refresh_token"]
    resp = client.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": SERVICE,
            "client_id": "test",
            "scope": "repository:alice/app:pull,push",
        },
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["refresh_token"] == refresh and "token" not in body
    assert body["scope"] == "repository:alice/app:pull,push"
    assert access(issuer, body["access_token"])[0]["actions"] == ["pull", "push"]
    bad = client.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "afr_x",
            "service": SERVICE,
            "client_id": "t",
        },
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_grant"


def test_password_grant(setup: tuple[TestClient, SqlIdentity, Issuer]) -> None:
    client, _, _ = setup
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "alice-password",
        "service": SERVICE,
        "client_id": "docker",
        "access_type": "offline",
        "scope": "repository:alice/app:pull",
    }
    body = client.post("/token", data=form).json()
    assert body["access_token"] and body["refresh_token"].startswith("afr_")
    assert client.post("/token", data={**form, "password": "x"}).status_code == 401
    assert client.post("/token", data={**form, "client_id": ""}).status_code == 400
    assert client.post("/token", data={**form, "grant_type": "magic"}).status_code == 400


def test_access_token_login_expiry_and_revocation(
    setup: tuple[TestClient, SqlIdentity, Issuer],
) -> None:
    client, identity, issuer = setup
    params = {"service": SERVICE, "scope": "repository:alice/app:pull,push"}
    token_id, secret = identity.create_token("alice", "ci", scopes=["pull"])
    resp = client.get("/token", params=params, headers=basic("alice", secret))
    assert access(issuer, resp.json()["token"])[0]["actions"] == ["pull"]
    assert client.get("/token", params=params, headers=basic("bob", secret)).status_code == 401
    identity.revoke_token(token_id)
    assert client.get("/token", params=params, headers=basic("alice", secret)).status_code == 401
    _, expired = identity.create_token("alice", "old", expires_in=dt.timedelta(seconds=-1))
    assert client.get("/token", params=params, headers=basic("alice", expired)).status_code == 401
    listed = identity.tokens("alice")
    assert [t.name for t in listed] == ["ci", "old"] and listed[0].revoked_at is not None


def test_anonymous_pull_of_public_repository(
    setup: tuple[TestClient, SqlIdentity, Issuer],
) -> None:
    client, identity, issuer = setup
    params = {"service": SERVICE, "scope": "repository:alice/app:pull"}
    assert access(issuer, client.get("/token", params=params).json()["token"])[0]["actions"] == []
    identity.set_public("alice/app", True)
    assert access(issuer, client.get("/token", params=params).json()["token"])[0]["actions"] == [
        "pull"
    ]


def test_grants_and_namespaces(setup: tuple[TestClient, SqlIdentity, Issuer]) -> None:
    client, identity, issuer = setup
    identity.add_namespace("team", owner="alice")
    identity.grant("team", "bob", ["pull", "push"])
    params = {"service": SERVICE, "scope": "repository:team/app:pull,push"}
    resp = client.get("/token", params=params, headers=basic("bob", "bob-password"))
    assert access(issuer, resp.json()["token"])[0]["actions"] == ["pull", "push"]


def test_notification_hook_needs_the_secret(
    setup: tuple[TestClient, SqlIdentity, Issuer], tmp_path: Path
) -> None:
    client, _, _ = setup
    assert client.post("/hooks/registry", json={"events": []}).status_code == 401
    secret = (tmp_path / "cfg" / "notify-secret").read_text().strip()
    ok = client.post(
        "/hooks/registry", json={"events": []}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert ok.status_code == 200
    assert client.get("/metrics").status_code == 200
