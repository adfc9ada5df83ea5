"""The Images and Builds areas over HTTP (TestClient): who sees what, CSRF on
every POST, tag deletion by owners only, and the build log stream resuming
from Last-Event-ID. The registry itself is not running: catalogue rows are
written directly, and deleting in the registry is replaced by a recorder."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, insert

from asterfleet.auth import add_user, create_token
from asterfleet.console import ConsoleSettings, create_app
from asterfleet.console.builds import log_event, may_operate, resume_offset
from asterfleet.console.factory_state import FactoryState
from asterfleet.console.images import highlight_dockerfile, human_size
from asterfleet.console.images_settings import ImagesSettings
from asterfleet.console.security import Principal
from asterfleet.db import open_database
from asterfleet.errors import UsageError
from asterfleet.factory import queue
from asterfleet.factory.dockerfiles import store_dockerfile
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.logs import BuildLog
from asterfleet.factory.store import add_knot
from asterfleet.registry.config import write_config
from asterfleet.registry.schema import cat_repositories, cat_tags
from tests.unit.console_fakes import FakeEtcd

PASSWORD = "s3cret-pass"
DIGEST = "sha256:" + "ab" * 32
DOCKERFILE = 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n'


@pytest.fixture
def app_parts(tmp_path: Path) -> Iterator[tuple[TestClient, FactoryState]]:
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "alice", PASSWORD)  # operator, owns alice/
    add_user(db, "bob", PASSWORD)  # operator, owns bob/
    add_user(db, "victor", PASSWORD, role="viewer")
    write_config(
        tmp_path / "registry",
        realm="http://127.0.0.1:9/token",
        service="test-registry",
        listen="127.0.0.1:9",  # nothing answers: the catalogue loop just logs
    )
    images = ImagesSettings(
        registry_dir=tmp_path / "registry",
        factory_db=f"sqlite:///{tmp_path / 'factory.db'}",
        registry_host="registry.example:5000",
        reconcile_interval=3600,
        login_cache_seconds=0,
    )
    settings = ConsoleSettings(cluster="test", watch=False, images=images)
    app = create_app(settings, db=db, etcd_factory=lambda _eps: FakeEtcd())  # type: ignore[arg-type,return-value]
    fs: FactoryState = app.state.factory
    seed(fs.engine)
    with TestClient(app, follow_redirects=False) as client:
        yield client, fs


@pytest.fixture
def client(app_parts: tuple[TestClient, FactoryState]) -> TestClient:
    return app_parts[0]


@pytest.fixture
def fs(app_parts: tuple[TestClient, FactoryState]) -> FactoryState:
    return app_parts[1]


def seed(engine: Engine) -> None:
    """A knot with one passed build that pushed alice/app:1, and bob's image."""
    add_knot(
        engine,
        validate_knot(
            {"name": "app", "git_url": "/src/app", "repository": "alice/app", "owners": ["alice"]}
        ),
    )
    build = queue.enqueue(engine, "app", "refs/heads/main", None, "test").build
    queue.claim(engine, "w1")
    store_dockerfile(engine, build.id, "Dockerfile", DOCKERFILE)
    BuildLog(engine, build.id).line("step 1")
    queue.set_state(engine, build.id, "passed", digest=DIGEST, image="alice/app:1", tags=["1"])
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        for repo in ("alice/app", "bob/tool"):
            conn.execute(insert(cat_repositories).values(name=repo, updated_at=now))
            conn.execute(
                insert(cat_tags).values(
                    repository=repo,
                    tag="1",
                    digest=DIGEST,
                    media_type="application/vnd.oci.image.manifest.v1+json",
                    size=1_234_567,
                    created=now,
                    platforms=["linux/amd64"],
                    layers=[
                        {"digest": "sha256:" + "cd" * 32, "size": 1_234_000, "media_type": "x"}
                    ],
                    updated_at=now,
                )
            )


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden field {name}"
    return m.group(1)


def login(client: TestClient, user: str) -> str:
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": user,
            "password": PASSWORD,
            "csrf_token": hidden(page.text, "csrf_token"),
        },
    )
    assert r.status_code == 303, r.text
    return hidden(client.get("/images").text, "csrf_token")


# -- pure helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_event_id", "offset", "expected"),
    [(None, None, 0), (None, "12", 12), ("40", "12", 40), ("", "7", 7), ("0", None, 0)],
)
def test_resume_offset_prefers_last_event_id(
    last_event_id: str | None, offset: str | None, expected: int
) -> None:
    assert resume_offset(last_event_id, offset) == expected


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", "9" * 16])
def test_resume_offset_rejects_what_is_not_an_offset(bad: str) -> None:
    with pytest.raises(UsageError, match="log offset"):
        resume_offset(bad, None)


def test_a_log_event_survives_carriage_returns_and_blank_lines() -> None:
    event = log_event(42, "a\r\n\nb\rc\n")
    lines = event.split("\n")
    assert lines[0] == "id: 42" and lines[1] == "event: log"
    assert json.loads(lines[2].removeprefix("data: ")) == "a\r\n\nb\rc\n"
    assert event.endswith("\n\n") and event.count("\n") == 4


@pytest.mark.parametrize(
    ("user", "role", "owners", "allowed"),
    [
        ("root", "admin", ["alice"], True),
        ("alice", "viewer", ["alice"], True),
        ("bob", "operator", ["alice"], False),
        ("bob", "operator", [], True),
        ("victor", "viewer", [], False),
    ],
)
def test_who_may_build_a_knot(user: str, role: str, owners: list[str], allowed: bool) -> None:
    knot = validate_knot({"name": "k", "git_url": "/x", "repository": "alice/k", "owners": owners})
    principal = Principal(
        user, role, "console", ("read", "write") if role != "viewer" else ("read",)
    )
    assert may_operate(principal, knot) is allowed


def test_sizes_and_highlighting() -> None:
    assert human_size(512) == "512 B"
    assert human_size(1_234_567) == "1.2 MiB"
    html = str(highlight_dockerfile('FROM scratch\nRUN echo "<b>"\n'))
    assert 'class="highlight"' in html and "&lt;b&gt;" in html and "<b>" not in html


# -- pages -----------------------------------------------------------------------


def test_images_and_builds_pages_need_a_session(client: TestClient) -> None:
    for path in (
        "/images",
        "/images/alice/app",
        "/images/alice/app/tags/1",
        "/knots",
        "/knots/app",
        "/knots/app/builds/1",
        "/knots/app/builds/1/log",
    ):
        r = client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login?next=/")


def test_a_user_sees_only_repositories_they_may_pull(client: TestClient) -> None:
    login(client, "alice")
    page = client.get("/images").text
    assert "alice/app" in page and "bob/tool" not in page
    assert client.get("/images/bob/tool").status_code == 404
    assert client.get("/images/bob/tool/tags/1").status_code == 404


def test_tag_page_shows_layers_dockerfile_build_and_pull_command(client: TestClient) -> None:
    login(client, "alice")
    repo = client.get("/images/alice/app")
    assert repo.status_code == 200
    assert DIGEST[:19] in repo.text and "1.2 MiB" in repo.text and "linux/amd64" in repo.text
    page = client.get("/images/alice/app/tags/1")
    assert page.status_code == 200
    assert "docker pull registry.example:5000/alice/app:1" in page.text
    assert 'data-copy="pull-docker"' in page.text
    assert 'href="/knots/app/builds/1"' in page.text
    assert 'class="highlight"' in page.text and "busybox" in page.text
    css = client.get("/images/highlight.css")
    assert css.status_code == 200 and ".highlight" in css.text
    assert "style-src 'self'" in page.headers["content-security-policy"]


def test_only_the_owner_deletes_a_tag_and_only_with_csrf(
    client: TestClient, fs: FactoryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted: list[tuple[str, str]] = []

    def fake_delete(repository: str, tag: str) -> None:
        deleted.append((repository, tag))
        with fs.engine.begin() as conn:
            conn.execute(
                delete(cat_tags).where(cat_tags.c.repository == repository, cat_tags.c.tag == tag)
            )

    monkeypatch.setattr(fs.catalogue, "delete_tag", fake_delete)
    bob_csrf = login(client, "bob")
    r = client.post("/images/alice/app/tags/1/delete", data={"csrf_token": bob_csrf})
    assert r.status_code == 403 and deleted == []
    client.post("/logout", data={"csrf_token": bob_csrf})

    csrf = login(client, "alice")
    assert 'action="/images/alice/app/tags/1/delete"' in client.get("/images/alice/app").text
    assert client.post("/images/alice/app/tags/1/delete").status_code == 403
    assert (
        client.post("/images/alice/app/tags/1/delete", data={"csrf_token": "x"}).status_code == 403
    )
    assert deleted == []
    r = client.post("/images/alice/app/tags/1/delete", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/images/alice/app?msg=")
    assert deleted == [("alice/app", "1")]


def test_knot_pages_and_build_actions(client: TestClient, fs: FactoryState) -> None:
    csrf = login(client, "alice")
    assert "app" in client.get("/knots").text
    page = client.get("/knots/app")
    assert page.status_code == 200 and "Build now" in page.text and "passed" in page.text
    assert client.post("/knots/app/build", data={"ref": "refs/heads/main"}).status_code == 403
    r = client.post("/knots/app/build", data={"ref": "refs/heads/main", "csrf_token": csrf})
    assert r.status_code == 303 and "queued+build+%232" in r.headers["location"].replace("%20", "+")
    r = client.post("/knots/app/builds/2/cancel", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert queue.get_build(fs.engine, "app", 2).state == "cancelled"
    r = client.post("/knots/app/builds/2/retry", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/knots/app/builds/3")
    bad = client.post("/knots/app/build", data={"ref": "main", "csrf_token": csrf})
    assert "err=" in bad.headers["location"]


def test_another_operator_may_not_build_an_owned_knot(client: TestClient) -> None:
    csrf = login(client, "bob")
    assert "Build now" not in client.get("/knots/app").text
    r = client.post("/knots/app/build", data={"ref": "refs/heads/main", "csrf_token": csrf})
    assert r.status_code == 404  # bob may not even see alice's knot (issue 10, finding 3)


def sse_events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "event" in fields:
            events.append(fields)
    return events


def test_the_build_log_stream_resumes_from_last_event_id(
    client: TestClient, fs: FactoryState
) -> None:
    build = queue.enqueue(fs.engine, "app", "refs/heads/main", None, "test").build
    queue.claim(fs.engine, "w1")
    blog = BuildLog(fs.engine, build.id)
    for i in range(3):
        blog.line(f"line {i}")
    queue.set_state(fs.engine, build.id, "failed", reason="test")
    fs.ownership.grant("alice", "victor", ["pull"])  # who may pull the image sees its builds
    login(client, "victor")  # viewers may read logs

    full = sse_events(client.get(f"/knots/app/builds/{build.number}/log").text)
    assert full[-1] == {"event": "end", "data": '{"state": "failed"}'}
    text = "".join(json.loads(e["data"]) for e in full if e["event"] == "log")
    assert text == "line 0\nline 1\nline 2\n"
    assert int(full[-2]["id"]) == len(text)

    resumed = client.get(
        f"/knots/app/builds/{build.number}/log?offset=0", headers={"Last-Event-ID": "7"}
    )
    again = sse_events(resumed.text)
    assert "".join(json.loads(e["data"]) for e in again if e["event"] == "log") == text[7:]
    assert (
        client.get(
            f"/knots/app/builds/{build.number}/log", headers={"Last-Event-ID": "nope"}
        ).status_code
        == 400
    )

    page = client.get(f"/knots/app/builds/{build.number}")
    assert "line 2" in page.text and "data-log-stream" not in page.text  # stored log, no stream
    assert client.get(f"/knots/app/builds/{build.number}/log.txt").text == text


def test_the_token_endpoint_is_served_by_the_console_for_console_users(
    client: TestClient, fs: FactoryState
) -> None:
    db = client.app.state.console.db  # type: ignore[attr-defined]
    fs.ownership.add_namespace("team", owner="alice")
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    params = {"service": "test-registry", "scope": "repository:team/x:pull,push"}
    r = client.get("/token", params=params, headers={"Authorization": basic})
    assert r.status_code == 200, r.text
    claims: dict[str, Any] = fs.routes.service.issuer.decode(r.json()["token"])
    assert claims["sub"] == "alice"
    assert claims["access"] == [
        {"type": "repository", "name": "team/x", "actions": ["pull", "push"]}
    ]
    # One token kind: its scopes say what it may do in the registry.
    for scopes, actions in ((("read",), []), (("read", "pull"), ["pull"])):
        token = create_token(db, "alice", "ci", scopes).token
        basic = "Basic " + base64.b64encode(f"alice:{token}".encode()).decode()
        r = client.get("/token", params=params, headers={"Authorization": basic})
        granted = fs.routes.service.issuer.decode(r.json()["token"])["access"][0]["actions"]
        assert granted == actions, scopes
    # The OAuth2 form works through the console's app-wide CSRF guard.
    r = client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "bob",
            "password": PASSWORD,
            "service": "test-registry",
            "client_id": "test",
            "scope": "repository:bob/y:push",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "repository:bob/y:push"
    bad = client.get(
        "/token",
        params=params,
        headers={"Authorization": "Basic " + base64.b64encode(b"alice:wrong-one").decode()},
    )
    assert bad.status_code == 401


def test_the_build_log_stream_stops_when_the_session_ends(
    client: TestClient, fs: FactoryState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10.11: a log stream looks its session up again (logout, expiry)."""
    from asterfleet.console import builds, security

    build = queue.enqueue(fs.engine, "app", "refs/heads/main", None, "test").build
    queue.claim(fs.engine, "w1")
    blog = BuildLog(fs.engine, build.id)
    blog.line("first")
    queue.set_state(fs.engine, build.id, "failed", reason="test")
    login(client, "alice")
    real = security.lookup_session  # type: ignore[attr-defined]
    lookups: list[int] = []

    def ends_after_the_first(*args: Any) -> Any:
        lookups.append(1)
        return real(*args) if len(lookups) == 1 else None  # logged out meanwhile

    monkeypatch.setattr(security, "lookup_session", ends_after_the_first)
    monkeypatch.setattr(builds, "SESSION_RECHECK_SECONDS", 0.0)
    events = sse_events(client.get(f"/knots/app/builds/{build.number}/log").text)
    assert events == [{"event": "end", "data": '{"state": "session ended"}'}]
    assert len(lookups) == 2


def test_token_endpoint_failures_count_for_the_console_login_too(client: TestClient) -> None:
    """Issue 10, finding 4: one limiter for the console form and /token."""
    # A window longer than this test can take, however slow argon2 is here.
    client.app.state.console.logins.limiter.window = 3600  # type: ignore[attr-defined]
    wrong = "Basic " + base64.b64encode(b"bob:wrong-password").decode()
    for _ in range(5):
        r = client.get(
            "/token", params={"service": "test-registry"}, headers={"Authorization": wrong}
        )
        assert r.status_code == 401
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": "bob",
            "password": PASSWORD,
            "csrf_token": hidden(page.text, "csrf_token"),
        },
    )
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # alice, from the same address, is not locked out.
    login(client, "alice")
