"""The /token endpoint as registry clients call it (GET with Basic auth,
OAuth2 POST with password and refresh_token grants)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asterfleet.auth import (
    Authenticator,
    LoginLimiter,
    add_user,
    create_token,
    list_tokens,
    remove_user,
    revoke_token,
    set_password,
)
from asterfleet.db import ApiToken, Database, open_database
from asterfleet.registry import keys
from asterfleet.registry.app import create_app, registry_routes
from asterfleet.registry.config import write_config
from asterfleet.registry.ownership import Ownership
from asterfleet.registry.schema import create_tables
from asterfleet.registry.tokens import Issuer
from asterfleet.storage import open_engine

SERVICE = "registry.test"


@dataclass
class Served:
    client: TestClient
    db: Database  # the one identity
    ownership: Ownership
    issuer: Issuer

    def __iter__(self) -> Iterator[object]:
        yield from (self.client, self, self.issuer)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Served]:
    settings = write_config(
        tmp_path / "cfg", "http://127.0.0.1:9/token", SERVICE, listen="127.0.0.1:9"
    )
    engine = create_tables(open_engine(str(tmp_path / "factory.db")))
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "alice", "alice-password")
    add_user(db, "bob", "bob-password")
    routes = registry_routes(
        settings,
        engine,
        # A window longer than any test here takes, however slow argon2 is.
        Authenticator(db, LoginLimiter(window=3600)),
        reconcile_interval=3600,
        cache_seconds=0,
    )
    app = create_app(routes)
    issuer = Issuer(keys.load(tmp_path / "cfg"), SERVICE, SERVICE)
    with TestClient(app) as client:
        yield Served(client, db, Ownership(engine), issuer)
    db.close()
    engine.dispose()


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def access(issuer: Issuer, token: str) -> list[dict[str, object]]:
    claims = issuer.decode(token)
    return list(claims["access"])


def test_get_token_for_owner_and_stranger(setup: Served) -> None:
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


def test_repeated_scopes_and_login_probe(setup: Served) -> None:
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
    setup: Served,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    client, _, _ = setup
    resp = client.get("/token", params=params, headers=headers)
    assert resp.status_code == status
    assert resp.json()["errors"][0]["message"]


def test_failed_logins_are_rate_limited(setup: Served) -> None:
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


def test_offline_token_then_refresh_grant(setup: Served) -> None:
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


def test_password_grant(setup: Served) -> None:
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
    setup: Served,
) -> None:
    client, issuer = setup.client, setup.issuer
    params = {"service": SERVICE, "scope": "repository:alice/app:pull,push"}
    ci = create_token(setup.db, "alice", "ci", scopes=("pull",))
    resp = client.get("/token", params=params, headers=basic("alice", ci.token))
    assert access(issuer, resp.json()["token"])[0]["actions"] == ["pull"]
    assert client.get("/token", params=params, headers=basic("bob", ci.token)).status_code == 401
    revoke_token(setup.db, ci.id)
    assert client.get("/token", params=params, headers=basic("alice", ci.token)).status_code == 401
    old = create_token(setup.db, "alice", "old", scopes=("pull", "push"), ttl_seconds=60)
    with setup.db.session() as s:
        row = s.get(ApiToken, old.id)
        assert row is not None
        row.expires_at = time.time() - 1
    assert client.get("/token", params=params, headers=basic("alice", old.token)).status_code == 401
    listed = list_tokens(setup.db, "alice")
    assert [t.name for t in listed] == ["ci", "old"] and listed[0].revoked_at is not None
    assert not any(t.active for t in listed)


def test_anonymous_pull_of_public_repository(
    setup: Served,
) -> None:
    client, issuer = setup.client, setup.issuer
    params = {"service": SERVICE, "scope": "repository:alice/app:pull"}
    assert access(issuer, client.get("/token", params=params).json()["token"])[0]["actions"] == []
    setup.ownership.set_public("alice/app", True)
    assert access(issuer, client.get("/token", params=params).json()["token"])[0]["actions"] == [
        "pull"
    ]


def test_grants_and_namespaces(setup: Served) -> None:
    client, issuer = setup.client, setup.issuer
    setup.ownership.add_namespace("team", owner="alice")
    setup.ownership.grant("team", "bob", ["pull", "push"])
    params = {"service": SERVICE, "scope": "repository:team/app:pull,push"}
    resp = client.get("/token", params=params, headers=basic("bob", "bob-password"))
    assert access(issuer, resp.json()["token"])[0]["actions"] == ["pull", "push"]


def test_notification_hook_needs_the_secret(setup: Served, tmp_path: Path) -> None:
    client, _, _ = setup
    assert client.post("/hooks/registry", json={"events": []}).status_code == 401
    secret = (tmp_path / "cfg" / "notify-secret").read_text().strip()
    ok = client.post(
        "/hooks/registry", json={"events": []}, headers={"Authorization": f"Bearer {secret}"}
    )
    assert ok.status_code == 200


def test_metrics_need_a_token_with_scope_metrics(setup: Served) -> None:
    """The token server may face the internet: its /metrics is for Prometheus'
    token, as the console's is; a password or a registry token is not enough."""
    client = setup.client
    client.get("/token", params={"service": SERVICE}, headers=basic("alice", "alice-password"))

    def scrape(headers: dict[str, str]) -> tuple[int, str]:
        resp = client.get("/metrics", headers=headers)
        return resp.status_code, resp.text

    code, text = scrape({})
    assert code == 401 and "scope 'metrics'" in text
    assert 'Bearer realm="asterfleet"' in client.get("/metrics").headers["www-authenticate"]
    assert scrape(basic("alice", "alice-password"))[0] == 401
    assert scrape({"Authorization": "Bearer af_not-a-real-token"})[0] == 401
    pull = create_token(setup.db, "alice", "ci", ("pull", "push")).token
    code, text = scrape({"Authorization": f"Bearer {pull}"})
    assert code == 403 and "lacks scope 'metrics'" in text
    prometheus = create_token(setup.db, "bob", "prometheus", ("metrics",))
    code, text = scrape({"Authorization": f"Bearer {prometheus.token}"})
    assert code == 200
    assert 'asterfleet_registry_tokens_issued_total{grant="basic"}' in text
    revoke_token(setup.db, prometheus.id)
    assert scrape({"Authorization": f"Bearer {prometheus.token}"})[0] == 401


# -- refresh tokens stand for the login that made them (issue 10, finding 1) --------


def offline(setup: Served, user: str, secret: str) -> str:
    resp = setup.client.get(
        "/token",
        params={"service": SERVICE, "offline_token": "true"},
        headers=basic(user, secret),
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["refresh_token"])


def refreshed(setup: Served, refresh: str, scope: str) -> tuple[int, list[str]]:
    resp = setup.client.post(
        "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": SERVICE,
            "client_id": "test",
            "scope": scope,
        },
    )
    if resp.status_code != 200:
        return resp.status_code, []
    return 200, list(access(setup.issuer, resp.json()["access_token"])[0]["actions"])  # type: ignore[arg-type]


ALL = "repository:alice/app:pull,push,delete"


@pytest.mark.parametrize(
    ("scopes", "actions"),
    [
        (("pull",), ["pull"]),  # a pull-only token never yields push through a refresh
        (("read",), []),  # a console read-only token has no registry rights at all
        (("pull", "push"), ["pull", "push"]),
    ],
)
def test_a_refresh_token_keeps_the_scopes_of_the_token_it_came_from(
    setup: Served, scopes: tuple[str, ...], actions: list[str]
) -> None:
    token = create_token(setup.db, "alice", "ci", scopes)
    refresh = offline(setup, "alice", token.token)
    assert refreshed(setup, refresh, ALL) == (200, actions)


def test_a_refresh_token_follows_its_token_s_scopes_down_never_up(setup: Served) -> None:
    token = create_token(setup.db, "alice", "ci", ("pull", "push"))
    refresh = offline(setup, "alice", token.token)
    with setup.db.session() as s:
        row = s.get(ApiToken, token.id)
        assert row is not None
        row.scopes = "pull"
    assert refreshed(setup, refresh, ALL) == (200, ["pull"])
    with setup.db.session() as s:
        row = s.get(ApiToken, token.id)
        assert row is not None
        row.scopes = "delete pull push"
    assert refreshed(setup, refresh, ALL) == (200, ["pull", "push"])


def test_revoking_the_token_ends_its_refresh_tokens(setup: Served) -> None:
    token = create_token(setup.db, "alice", "ci", ("pull",))
    refresh = offline(setup, "alice", token.token)
    revoke_token(setup.db, token.id)
    assert refreshed(setup, refresh, ALL) == (401, [])


def test_a_new_password_ends_refresh_tokens(setup: Served) -> None:
    refresh = offline(setup, "alice", "alice-password")
    assert refreshed(setup, refresh, ALL) == (200, ["pull", "push", "delete"])
    set_password(setup.db, "alice", "new-alice-password")
    assert refreshed(setup, refresh, ALL) == (401, [])


def test_removing_the_user_ends_refresh_tokens(setup: Served) -> None:
    refresh = offline(setup, "bob", "bob-password")
    assert refreshed(setup, refresh, "repository:bob/x:pull") == (200, ["pull"])
    remove_user(setup.db, "bob")
    add_user(setup.db, "bob", "another-bob-password")  # the same name is not the same login
    assert refreshed(setup, refresh, "repository:bob/x:pull") == (401, [])


# -- ownership edges (issue 10, finding 9) ------------------------------------------


def catalog_actions(setup: Served, user: str, secret: str) -> list[str]:
    resp = setup.client.get(
        "/token",
        params={"service": SERVICE, "scope": "registry:catalog:*"},
        headers=basic(user, secret),
    )
    assert resp.status_code == 200, resp.text
    return list(access(setup.issuer, resp.json()["token"])[0]["actions"])  # type: ignore[arg-type]


def test_an_admin_token_s_scopes_apply_to_the_catalog(setup: Served) -> None:
    add_user(setup.db, "root", "root-password", role="admin")
    assert catalog_actions(setup, "root", "root-password") == ["*"]
    narrow = create_token(setup.db, "root", "one repo", ("repository:root/app:pull",))
    assert catalog_actions(setup, "root", narrow.token) == []
    console_only = create_token(setup.db, "root", "fleet", ("read", "write"))
    assert catalog_actions(setup, "root", console_only.token) == []
    puller = create_token(setup.db, "root", "mirror", ("pull",))
    assert catalog_actions(setup, "root", puller.token) == ["*"]
    assert catalog_actions(setup, "alice", "alice-password") == []


def test_a_new_user_named_like_a_namespace_does_not_co_own_it(setup: Served) -> None:
    setup.ownership.add_namespace("team", owner="alice")
    add_user(setup.db, "team", "team-password")
    scope = {"service": SERVICE, "scope": "repository:team/app:pull,push,delete"}
    as_team = setup.client.get("/token", params=scope, headers=basic("team", "team-password"))
    assert access(setup.issuer, as_team.json()["token"])[0]["actions"] == []
    as_alice = setup.client.get("/token", params=scope, headers=basic("alice", "alice-password"))
    assert access(setup.issuer, as_alice.json()["token"])[0]["actions"] == [
        "pull",
        "push",
        "delete",
    ]
