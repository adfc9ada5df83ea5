"""The console over HTTP (Starlette TestClient): sessions, CSRF, tokens, API, OpenAPI."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asterfleet.auth import add_user, create_token, list_tokens
from asterfleet.console import ConsoleSettings, create_app
from asterfleet.console.security import SESSION_COOKIE
from asterfleet.db import Database, open_database
from asterfleet.fleet.keys import Keyspace
from asterfleet.fleet.model import parse_admin
from tests.unit.console_fakes import FakeEtcd, put_node

KS = Keyspace("test")
PASSWORD = "s3cret-pass"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = open_database(str(tmp_path / "console.db"))
    add_user(database, "alice", PASSWORD)
    add_user(database, "victor", PASSWORD, role="viewer")
    return database


@pytest.fixture
def etcd() -> FakeEtcd:
    fake = FakeEtcd()
    put_node(fake, KS, "node-1", version="20.5.0")
    put_node(fake, KS, "node-2")
    return fake


@pytest.fixture
def client(db: Database, etcd: FakeEtcd) -> Iterator[TestClient]:
    settings = ConsoleSettings(cluster="test", watch=False, login_max_failures=3)
    app = create_app(settings, db=db, etcd_factory=lambda _eps: etcd)  # type: ignore[arg-type,return-value]
    with TestClient(app, follow_redirects=False) as c:
        yield c


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden field {name}"
    return m.group(1)


def login(client: TestClient, user: str = "alice", password: str = PASSWORD) -> str:
    """Log in through the form; the session's CSRF token."""
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": user,
            "password": password,
            "csrf_token": hidden(page.text, "csrf_token"),
        },
    )
    assert r.status_code == 303, r.text
    fleet = client.get("/fleet")
    assert fleet.status_code == 200
    return hidden(fleet.text, "csrf_token")


def test_a_page_without_a_session_redirects_to_login(client: TestClient) -> None:
    for path in ("/fleet", "/balancers", "/events?kind=left", "/account"):
        r = client.get(path)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login?next=/")


def test_login_sets_an_httponly_samesite_session_cookie(client: TestClient) -> None:
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": hidden(page.text, "csrf_token"),
            "next": "/events",
        },
    )
    assert r.status_code == 303 and r.headers["location"] == "/events"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert client.get("/fleet").status_code == 200


def test_a_wrong_password_is_rejected(client: TestClient) -> None:
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": "alice",
            "password": "nope-nope",
            "csrf_token": hidden(page.text, "csrf_token"),
        },
    )
    assert r.status_code == 401
    assert "Wrong user name or password" in r.text
    assert SESSION_COOKIE not in r.cookies
    assert client.get("/fleet").status_code == 303


def test_login_is_rate_limited(client: TestClient) -> None:
    token = hidden(client.get("/login").text, "csrf_token")
    for _ in range(3):
        r = client.post("/login", data={"username": "alice", "password": "x", "csrf_token": token})
        assert r.status_code == 401
    r = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_the_login_form_needs_its_csrf_token(client: TestClient) -> None:
    client.get("/login")
    r = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403


def test_login_never_redirects_off_site(client: TestClient) -> None:
    token = hidden(client.get("/login").text, "csrf_token")
    r = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": token,
            "next": "//evil.example/",
        },
    )
    assert r.headers["location"] == "/fleet"


def test_the_fleet_page_lists_every_node(client: TestClient) -> None:
    login(client)
    html = client.get("/fleet").text
    assert 'id="node-node-1"' in html and 'id="node-node-2"' in html
    assert "20.5.0" in html and "sip:127.0.0.1:" in html


def test_a_post_without_the_csrf_token_is_rejected(client: TestClient, etcd: FakeEtcd) -> None:
    login(client)
    r = client.post("/fleet/nodes/node-1/drain", data={})
    assert r.status_code == 403
    r = client.post("/fleet/nodes/node-1/drain", data={"csrf_token": "forged"})
    assert r.status_code == 403
    assert KS.admin_of("node-1") not in etcd.data


def test_drain_from_the_page_signs_the_intent(client: TestClient, etcd: FakeEtcd) -> None:
    csrf = login(client)
    r = client.post("/fleet/nodes/node-1/drain", data={"csrf_token": csrf, "note": "reboot"})
    assert r.status_code == 303
    intent = parse_admin("k", etcd.data[KS.admin_of("node-1")].value)
    assert intent.drain and intent.by == "alice@console" and intent.note == "reboot"
    # the fetch path: CSRF token in a header, JSON back
    r = client.post(
        "/fleet/nodes/node-1/weight",
        data={"weight": "7"},
        headers={"X-CSRF-Token": csrf, "X-Requested-With": "fetch"},
    )
    assert r.json() == {"ok": True, "message": "weight node-1: done"}
    assert parse_admin("k", etcd.data[KS.admin_of("node-1")].value).weight == 7
    r = client.post(
        "/fleet/nodes/node-1/weight",
        data={"weight": "lots"},
        headers={"X-CSRF-Token": csrf, "X-Requested-With": "fetch"},
    )
    assert r.status_code == 400 and "not a number" in r.json()["error"]


def test_a_viewer_may_look_but_not_act(client: TestClient, etcd: FakeEtcd) -> None:
    csrf = login(client, "victor")
    assert "view only" in client.get("/fleet").text
    r = client.post("/fleet/nodes/node-1/drain", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403
    assert KS.admin_of("node-1") not in etcd.data


def test_logout_ends_the_session(client: TestClient) -> None:
    csrf = login(client)
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/fleet").status_code == 303


def test_the_api_needs_a_token(client: TestClient) -> None:
    r = client.get("/api/v1/fleet")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.get("/api/v1/fleet", headers={"Authorization": "Bearer aft_wrong"})
    assert r.status_code == 401


def test_api_tokens_are_scoped(client: TestClient, db: Database, etcd: FakeEtcd) -> None:
    reader = create_token(db, "alice", "dashboards", ("read",)).token
    writer = create_token(db, "alice", "deploys", ("read", "write")).token
    r = client.get("/api/v1/fleet", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 200
    body = r.json()
    assert body["cluster"] == "test" and [n["id"] for n in body["nodes"]] == ["node-1", "node-2"]
    assert (
        client.get("/api/v1/nodes/node-2", headers={"Authorization": f"Bearer {reader}"}).json()[
            "state"
        ]
        == "active"
    )
    assert (
        client.get("/api/v1/nodes/ghost", headers={"Authorization": f"Bearer {reader}"}).status_code
        == 404
    )
    r = client.post("/api/v1/nodes/node-2/drain", headers={"Authorization": f"Bearer {reader}"})
    assert r.status_code == 403
    # a bearer token is not ambient: no CSRF token needed
    r = client.post(
        "/api/v1/nodes/node-2/drain",
        json={"note": "from CI"},
        headers={"Authorization": f"Bearer {writer}"},
    )
    # Signed with the token's name: which script did it.
    assert r.status_code == 200 and r.json()["by"] == "alice@api:deploys"
    assert parse_admin("k", etcd.data[KS.admin_of("node-2")].value).drain
    r = client.post(
        "/api/v1/nodes/node-2/weight",
        json={"weight": 2000},
        headers={"Authorization": f"Bearer {writer}"},
    )
    assert r.status_code == 422
    for not_a_weight in (False, True, "5", 1e3, 2.5):
        r = client.post(
            "/api/v1/nodes/node-2/weight",
            json={"weight": not_a_weight},
            headers={"Authorization": f"Bearer {writer}"},
        )
        assert r.status_code == 422, not_a_weight
    assert parse_admin("k", etcd.data[KS.admin_of("node-2")].value).weight is None
    r = client.post("/api/v1/nodes/ghost/drain", headers={"Authorization": f"Bearer {writer}"})
    assert r.status_code == 404
    assert client.get(
        "/api/v1/balancers", headers={"Authorization": f"Bearer {reader}"}
    ).json() == {
        "agree": True,
        "balancers": [],
    }


def test_the_api_from_a_browser_session_needs_the_csrf_header(client: TestClient) -> None:
    csrf = login(client)
    assert client.get("/api/v1/fleet").status_code == 200
    assert client.post("/api/v1/nodes/node-1/drain").status_code == 403
    assert (
        client.post("/api/v1/nodes/node-1/drain", headers={"X-CSRF-Token": csrf}).status_code == 200
    )


def test_the_openapi_document_describes_the_api(client: TestClient) -> None:
    doc = client.get("/api/openapi.json").json()
    paths = set(doc["paths"])
    assert {
        "/api/v1/fleet",
        "/api/v1/nodes/{node_id}",
        "/api/v1/nodes/{node_id}/drain",
        "/api/v1/nodes/{node_id}/undrain",
        "/api/v1/nodes/{node_id}/weight",
        "/api/v1/balancers",
        "/api/v1/events",
    } <= paths
    assert not any(p.startswith(("/fleet", "/login")) for p in paths)  # pages stay out


def test_metrics_need_a_login_and_security_headers_are_set(
    client: TestClient, db: Database
) -> None:
    client.get("/login")
    assert client.get("/metrics").status_code == 401
    scraper = {"Authorization": f"Bearer {create_token(db, 'victor', 'prom', ('metrics',)).token}"}
    r = client.get("/metrics", headers=scraper)
    assert r.status_code == 200
    assert (
        'asterfleet_console_http_requests_total{method="GET",route="/login",status="200"}' in r.text
    )
    assert client.get("/api/v1/fleet", headers=scraper).status_code == 403  # /metrics only
    login(client)
    assert client.get("/metrics").status_code == 200  # a browser that logged in
    page = client.get("/login")
    assert page.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in page.headers["content-security-policy"]


def token_row(html: str, token_id: int) -> dict[str, str]:
    row = re.search(rf'<tr id="token-{token_id}">(.*?)</tr>', html, re.S)
    assert row, f"no row for token {token_id}"
    cells = dict(re.findall(r'<td class="([a-z-]+)">(.*?)</td>', row.group(1), re.S))
    cells["status"] = re.sub(r"<[^>]+>", "", cells["status"])
    return cells


def test_the_account_page_shows_when_a_token_expires_and_was_last_used(
    client: TestClient, db: Database
) -> None:
    csrf = login(client)
    r = client.post(
        "/account/tokens",
        data={"csrf_token": csrf, "name": "ci", "scopes": "read", "expires_days": "30"},
    )
    token = re.search(r'id="new-token" class="token">([^<]+)<', r.text)
    assert token is not None
    [issued] = [t for t in list_tokens(db, "alice") if t.name == "ci"]
    assert issued.expires_at is not None
    assert 29.9 * 86400 < issued.expires_at - time.time() <= 30 * 86400
    row = token_row(client.get("/account").text, issued.id)
    assert row["expires"] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(issued.expires_at))
    assert row["last-used"] == "never" and row["status"] == "active"
    before = time.time()
    client.get("/api/v1/fleet", headers={"Authorization": f"Bearer {token.group(1)}"})
    used = token_row(client.get("/account").text, issued.id)["last-used"]
    assert used != "never"
    assert time.mktime(time.strptime(used, "%Y-%m-%d %H:%M:%S")) >= int(before) - 1
    # One that has run out says so; one made without a lifetime never expires.
    old = create_token(db, "alice", "old", ("read",), ttl_seconds=0.001)
    forever = create_token(db, "alice", "forever", ("read",))
    page = client.get("/account").text
    assert token_row(page, old.id)["status"] == "expired"
    assert token_row(page, forever.id)["expires"] == "never"
    bad = client.post(
        "/account/tokens",
        data={"csrf_token": csrf, "name": "x", "scopes": "read", "expires_days": "-3"},
    )
    assert bad.status_code == 303 and "1-3650" in bad.headers["location"].replace("%20", " ")


def test_tokens_from_the_account_page_are_shown_once(client: TestClient) -> None:
    csrf = login(client)
    r = client.post(
        "/account/tokens", data={"csrf_token": csrf, "name": "grafana", "scopes": "read"}
    )
    token = re.search(r'id="new-token" class="token">([^<]+)<', r.text)
    assert token is not None
    assert (
        client.get(
            "/api/v1/fleet", headers={"Authorization": f"Bearer {token.group(1)}"}
        ).status_code
        == 200
    )
    assert token.group(1) not in client.get("/account").text


@pytest.mark.parametrize("path", ["/images", "/knots", "/knots/new", "/knots/hello", "/images/a/b"])
def test_images_and_knots_without_a_registry_say_how_to_configure_them(
    client: TestClient, path: str
) -> None:
    """Not a bare JSON 404: a page of the console, naming the commands to run."""
    login(client)
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert 'id="factory-off"' in r.text and "<nav>" in r.text
    assert "asterfleet registry config" in r.text and "asterfleet factory worker" in r.text


def test_the_knots_api_without_a_registry_answers_503_json(
    client: TestClient, db: Database
) -> None:
    issued = create_token(db, "alice", "script", ("read",))
    r = client.get("/api/v1/knots", headers={"Authorization": f"Bearer {issued.token}"})
    assert r.status_code == 503
    assert "--registry-dir" in r.json()["detail"]


def test_a_page_of_an_unconfigured_area_still_needs_a_login(client: TestClient) -> None:
    r = client.get("/knots/new")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/knots/new")


def test_the_node_page_shows_why_and_acts_back_to_itself(
    client: TestClient, etcd: FakeEtcd
) -> None:
    csrf = login(client)
    assert 'href="/fleet/nodes/node-1"' in client.get("/fleet").text
    put_node(etcd, KS, "node-1", active_calls=0, probe="200 OK", labels={"rack": "r7"})
    r = client.post(
        "/fleet/nodes/node-1/drain",
        data={"csrf_token": csrf, "note": "kernel", "back": "/fleet/nodes/node-1"},
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/fleet/nodes/node-1?msg=")
    page = client.get("/fleet/nodes/node-1")
    assert page.status_code == 200
    html = page.text
    assert 'id="node-state" data-state="drained"' in html
    # The operator's drain decides; the agent's 0 calls make it "drained".
    assert "drain (by alice@console: kernel)" in html and "0 in progress" in html
    assert "rack=r7" in html and "capture is not configured" in html
    assert "/fleet/nodes/node-1/undrain" in html
    # An outside address is never a place to go back to.
    r = client.post(
        "/fleet/nodes/node-1/undrain", data={"csrf_token": csrf, "back": "//evil.example/x"}
    )
    assert r.headers["location"].startswith("/fleet?msg=")
    assert client.get("/fleet/nodes/nobody").status_code == 404


def test_metrics_listen_serves_metrics_without_a_login_on_its_own_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For a Prometheus on a private network: the listener the operator names
    answers without a token; the console's own address still wants one."""
    import socket

    import httpx
    import typer
    import uvicorn
    from typer.testing import CliRunner

    from asterfleet import metrics as metrics_module
    from asterfleet.cli.console import run as console_run

    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    servers = []
    real_start = metrics_module.start_http_server

    def start(*args: object, **kwargs: object) -> tuple[object, object]:
        server, thread = real_start(*args, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server, thread

    monkeypatch.setattr(metrics_module, "start_http_server", start)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cli = typer.Typer()
    cli.command()(console_run)
    args = ["--db", str(tmp_path / "c.db"), "--listen", "127.0.0.1:0"]
    done = CliRunner().invoke(cli, [*args, "--metrics-listen", f"127.0.0.1:{port}"])
    try:
        assert done.exit_code == 0, done.output
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert r.status_code == 200 and "asterfleet_console_live_clients" in r.text
        with TestClient(served["app"]) as c:  # type: ignore[arg-type]
            assert c.get("/metrics").status_code == 401
    finally:
        for server in servers:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
