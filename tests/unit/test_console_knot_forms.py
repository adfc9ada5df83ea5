"""Adding, editing and removing knots in the console and through /api/v1/knots:
one validation with the CLI, errors next to their fields with the input kept,
who may do what, CSRF, and a webhook secret that is shown exactly once."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from asterfleet.auth import add_user, create_token
from asterfleet.cli.knot import app as knot_cli
from asterfleet.console import ConsoleSettings, create_app
from asterfleet.console.factory_state import FactoryState
from asterfleet.console.images_settings import ImagesSettings
from asterfleet.db import open_database
from asterfleet.errors import UsageError
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.store import add_knot, edit_knot, get_knot
from asterfleet.registry.config import write_config
from tests.unit.console_fakes import FakeEtcd

PASSWORD = "s3cret-pass"


@pytest.fixture
def app_parts(tmp_path: Path) -> Iterator[tuple[TestClient, FactoryState, str]]:
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "alice", PASSWORD)  # operator, owns knot "app" and namespace alice/
    add_user(db, "bob", PASSWORD)  # operator
    add_user(db, "victor", PASSWORD, role="viewer")
    add_user(db, "root", PASSWORD, role="admin")
    write_config(
        tmp_path / "registry",
        realm="http://127.0.0.1:9/token",
        service="test-registry",
        listen="127.0.0.1:9",
    )
    factory_db = f"sqlite:///{tmp_path / 'factory.db'}"
    images = ImagesSettings(
        registry_dir=tmp_path / "registry",
        factory_db=factory_db,
        registry_host="registry.example:5000",
        reconcile_interval=3600,
        login_cache_seconds=0,
    )
    settings = ConsoleSettings(cluster="test", watch=False, images=images)
    app = create_app(settings, db=db, etcd_factory=lambda _eps: FakeEtcd())  # type: ignore[arg-type,return-value]
    fs: FactoryState = app.state.factory
    add_knot(
        fs.engine,
        validate_knot(
            {"name": "app", "git_url": "/src/app", "repository": "alice/app", "owners": ["alice"]}
        ),
    )
    with TestClient(app, follow_redirects=False) as client:
        yield client, fs, factory_db


@pytest.fixture
def client(app_parts: tuple[TestClient, FactoryState, str]) -> TestClient:
    return app_parts[0]


@pytest.fixture
def fs(app_parts: tuple[TestClient, FactoryState, str]) -> FactoryState:
    return app_parts[1]


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
    return hidden(client.get("/knots").text, "csrf_token")


def knot_form(**fields: str) -> dict[str, str]:
    """The add form as a browser posts it (checked boxes are present)."""
    form = {
        "name": "web",
        "git_url": "https://git.example/alice/web.git",
        "branch": "main",
        "tag_pattern": "v*",
        "dockerfile": "docker/Dockerfile",
        "context": "docker",
        "builder": "buildah",
        "repository": "alice/web",
        "tag_rules": "branch:*={name}\ntag:v*={version}",
        "latest": "on",
        "build_args": "VERSION=1\nFLAVOUR=slim",
        "test_command": "sh -c 'web --self-test'",
        "webhook_provider": "",
        "git_poll_seconds": "",
        "poll_url": "",
        "poll_url_seconds": "300",
        "owners": "alice",
        "deploy_webhook": "",
        "deploy_command": "",
        "notify_url": "",
    }
    form.update(fields)
    return form


def field_value(html: str, name: str) -> str:
    m = re.search(rf'<input name="{name}" value="([^"]*)"', html)
    assert m, f"no input {name}"
    return m.group(1)


def cli_show(factory_db: str, name: str) -> dict[str, Any]:
    shown = CliRunner().invoke(knot_cli, ["show", name, "--json", "--db", factory_db])
    assert shown.exit_code == 0, shown.output
    spec: dict[str, Any] = json.loads(shown.output)["knot"]
    return spec


# -- forms -----------------------------------------------------------------------


def test_a_bad_git_url_is_shown_next_to_its_field_and_the_input_is_kept(
    client: TestClient, fs: FactoryState
) -> None:
    csrf = login(client, "alice")
    r = client.post("/knots/new", data={**knot_form(git_url="ext::sh -c evil"), "csrf_token": csrf})
    assert r.status_code == 400
    error = re.search(r'id="git_url-error"[^>]*>([^<]*)<', r.text)
    assert error and "is not a git URL" in error.group(1)
    git_input = re.search(r'<input name="git_url"[^>]*>', r.text)
    assert git_input and 'value="ext::sh -c evil"' in git_input.group(0)
    assert 'aria-invalid="true"' in git_input.group(0)
    assert field_value(r.text, "repository") == "alice/web"
    assert field_value(r.text, "test_command") == "sh -c &#39;web --self-test&#39;"
    assert "VERSION=1\nFLAVOUR=slim</textarea>" in r.text
    assert "tag:v*={version}</textarea>" in r.text
    with pytest.raises(UsageError):
        get_knot(fs.engine, "web")


def test_every_bad_field_is_reported_at_once(client: TestClient) -> None:
    csrf = login(client, "alice")
    r = client.post(
        "/knots/new",
        data={
            **knot_form(
                repository="NoSlash",
                build_args="JUSTAKEY",
                tag_rules="release=x",
                git_poll_seconds="5",
                poll_url="ftp://x",
            ),
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 400
    for key in ("repository", "build_args", "tag_rules", "git_poll_seconds", "poll_url"):
        assert f'id="{key}-error"' in r.text, key


def test_an_operator_adds_a_knot_only_in_a_namespace_they_may_push_to(
    client: TestClient, fs: FactoryState, app_parts: tuple[TestClient, FactoryState, str]
) -> None:
    csrf = login(client, "alice")
    r = client.post("/knots/new", data={**knot_form(repository="bob/web"), "csrf_token": csrf})
    assert r.status_code == 400 and "alice may not push to bob/web" in r.text
    r = client.post("/knots/new", data={**knot_form(), "csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/knots/web?msg=")
    spec = cli_show(app_parts[2], "web")
    assert spec["git_url"] == "https://git.example/alice/web.git"
    assert spec["build_args"] == {"VERSION": "1", "FLAVOUR": "slim"}
    assert spec["tag_rules"][1] == {"kind": "tag", "match": "v*", "tag": "{version}"}
    assert spec["latest"] is True and spec["sha_tag"] is False
    assert spec["triggers"]["webhook_secret"] is None
    again = client.post("/knots/new", data={**knot_form(), "csrf_token": csrf})
    assert again.status_code == 400 and 'id="name-error"' in again.text


def test_a_viewer_cannot_add_a_knot(client: TestClient, fs: FactoryState) -> None:
    csrf = login(client, "victor")
    assert 'id="add-knot"' not in client.get("/knots").text
    assert client.get("/knots/new").status_code == 403
    r = client.post("/knots/new", data={**knot_form(), "csrf_token": csrf})
    assert r.status_code == 403
    with pytest.raises(UsageError):
        get_knot(fs.engine, "web")


def test_every_post_needs_the_csrf_token(client: TestClient, fs: FactoryState) -> None:
    login(client, "alice")
    assert client.post("/knots/new", data=knot_form()).status_code == 403
    assert client.post("/knots/new", data={**knot_form(), "csrf_token": "x"}).status_code == 403
    assert client.post("/knots/app/edit", data=knot_form(name="app")).status_code == 403
    assert client.post("/knots/app/remove", data={"confirm": "app"}).status_code == 403
    get_knot(fs.engine, "app")


def test_an_operator_who_does_not_own_a_knot_cannot_edit_or_remove_it(
    client: TestClient, fs: FactoryState
) -> None:
    csrf = login(client, "bob")
    page = client.get("/knots/app").text
    assert 'id="edit-knot"' not in page and 'id="remove-knot"' not in page
    assert client.get("/knots/app/edit").status_code == 403
    r = client.post(
        "/knots/app/edit",
        data={**knot_form(repository="alice/app", test_command="true"), "csrf_token": csrf},
    )
    assert r.status_code == 403
    assert (
        client.post("/knots/app/remove", data={"confirm": "app", "csrf_token": csrf}).status_code
        == 403
    )
    assert get_knot(fs.engine, "app").test_command is None


def test_a_co_owner_without_push_rights_cannot_edit_even_with_the_same_repository(
    client: TestClient, fs: FactoryState
) -> None:
    """Issue 10, finding 9: an edit that keeps the repository still changes what
    the worker pushes there, so it needs the editor's push right too."""
    edit_knot(fs.engine, "app", {"owners": ["alice", "bob"]})  # alice lists bob freely
    csrf = login(client, "bob")
    r = client.post(
        "/knots/app/edit",
        data={
            **knot_form(repository="alice/app", git_url="https://git.example/bob/evil.git"),
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 400 and "bob may not push to alice/app" in r.text
    assert get_knot(fs.engine, "app").git_url == "/src/app"
    # With a push grant from alice, bob's edit goes through.
    fs.ownership.grant("alice", "bob", ["pull", "push"])
    r = client.post(
        "/knots/app/edit",
        data={
            **knot_form(repository="alice/app", git_url="https://git.example/alice/app.git"),
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 303, r.text


def test_owners_are_users_who_may_push_to_the_repository(client: TestClient) -> None:
    """Issue 10, finding 9: the worker pushes as an owner, so the creator
    cannot list just anyone."""
    csrf = login(client, "alice")
    for owners, error in (
        ("alice, bob", "owner bob may not push to alice/web"),
        ("alice, nobody", "owner &#39;nobody&#39; is not a user"),
    ):
        r = client.post("/knots/new", data={**knot_form(owners=owners), "csrf_token": csrf})
        assert r.status_code == 400 and error in r.text, r.text[-2000:]
    r = client.post("/knots/new", data={**knot_form(owners="alice"), "csrf_token": csrf})
    assert r.status_code == 303


def test_an_edit_in_the_console_is_what_the_cli_shows(
    client: TestClient, app_parts: tuple[TestClient, FactoryState, str]
) -> None:
    factory_db = app_parts[2]
    app_parts[1].ownership.grant("alice", "bob", ["pull", "push"])  # bob may be an owner
    csrf = login(client, "alice")
    form = client.get("/knots/app/edit")
    assert form.status_code == 200 and field_value(form.text, "git_url") == "/src/app"
    r = client.post(
        "/knots/app/edit",
        data={
            **knot_form(
                repository="alice/app",
                git_url="/src/app",
                test_command="sh -c 'test -x /bin/app'",
                git_poll_seconds="60",
                owners="alice, bob",
            ),
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 303, r.text
    spec = cli_show(factory_db, "app")
    assert spec["test_command"] == "sh -c 'test -x /bin/app'"
    assert spec["triggers"]["git_poll_seconds"] == 60
    assert spec["owners"] == ["alice", "bob"]
    # And the other way round: a CLI edit shows in the console's form.
    edited = CliRunner().invoke(
        knot_cli, ["edit", "app", "--set", "dockerfile=build/Containerfile", "--db", factory_db]
    )
    assert edited.exit_code == 0, edited.output
    assert field_value(client.get("/knots/app/edit").text, "dockerfile") == "build/Containerfile"


def test_the_webhook_secret_is_shown_once_and_never_again(
    client: TestClient, fs: FactoryState
) -> None:
    csrf = login(client, "alice")
    r = client.post(
        "/knots/new",
        data={**knot_form(webhook="on", webhook_provider="gitea"), "csrf_token": csrf},
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    secret = get_knot(fs.engine, "web").triggers.webhook_secret
    assert secret and len(secret) >= 32
    assert f'<code id="webhook-secret">{secret}</code>' in r.text
    assert "/hooks/knots/web" in r.text

    def everywhere() -> list[str]:
        return [
            client.get(path).text
            for path in (
                "/knots",
                "/knots/web",
                "/knots/web/edit",
                "/knots/web/remove",
                "/api/v1/knots",
                "/api/v1/knots/web",
                "/api/openapi.json",
            )
        ]

    assert all(secret not in page for page in everywhere())
    # Saving the form again keeps the secret without sending it.
    r = client.post(
        "/knots/web/edit",
        data={
            **knot_form(webhook="on", webhook_provider="gitea", test_command="true"),
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 303 and secret not in r.headers["location"]
    knot = get_knot(fs.engine, "web")
    assert knot.triggers.webhook_secret == secret and knot.test_command == "true"
    assert knot.triggers.webhook_provider == "gitea"
    assert all(secret not in page for page in everywhere())
    # Regenerating shows the new one once; unticking the webhook drops it.
    r = client.post(
        "/knots/web/edit",
        data={**knot_form(webhook="on", regenerate="on"), "csrf_token": csrf},
    )
    fresh = get_knot(fs.engine, "web").triggers.webhook_secret
    assert r.status_code == 200 and fresh and fresh != secret and fresh in r.text
    r = client.post("/knots/web/edit", data={**knot_form(), "csrf_token": csrf})
    assert r.status_code == 303 and get_knot(fs.engine, "web").triggers.webhook_secret is None


def test_removing_a_knot_asks_for_its_name(client: TestClient, fs: FactoryState) -> None:
    csrf = login(client, "alice")
    page = client.get("/knots/app/remove")
    assert page.status_code == 200 and 'name="confirm"' in page.text
    r = client.post("/knots/app/remove", data={"confirm": "ap", "csrf_token": csrf})
    assert r.status_code == 400 and 'id="confirm-error"' in r.text
    get_knot(fs.engine, "app")
    r = client.post("/knots/app/remove", data={"confirm": "app", "csrf_token": csrf})
    assert r.status_code == 303 and r.headers["location"].startswith("/knots?msg=")
    with pytest.raises(UsageError):
        get_knot(fs.engine, "app")
    assert "knot app removed" in client.get(r.headers["location"]).text


def test_an_admin_edits_any_knot(client: TestClient, fs: FactoryState) -> None:
    csrf = login(client, "root")
    assert 'id="edit-knot"' in client.get("/knots/app").text
    r = client.post(
        "/knots/app/edit",
        data={**knot_form(repository="alice/app", sha_tag="on"), "csrf_token": csrf},
    )
    assert r.status_code == 303, r.text
    assert get_knot(fs.engine, "app").sha_tag is True


# -- JSON API --------------------------------------------------------------------


def bearer(client: TestClient, user: str, scopes: tuple[str, ...]) -> dict[str, str]:
    db = client.app.state.console.db  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {create_token(db, user, f't-{len(scopes)}', scopes).token}"}


def test_the_knots_api_adds_reads_replaces_and_removes(
    client: TestClient, fs: FactoryState
) -> None:
    alice = bearer(client, "alice", ("read", "write"))
    body = {
        "name": "api",
        "git_url": "git@git.example:alice/api.git",
        "repository": "alice/api",
        "owners": ["alice"],
        "triggers": {"webhook_secret": "generate", "webhook_provider": "github"},
    }
    r = client.post("/api/v1/knots", json=body, headers=alice)
    assert r.status_code == 201, r.text
    secret = r.json()["webhook_secret"]
    assert secret == get_knot(fs.engine, "api").triggers.webhook_secret
    assert r.json()["knot"]["triggers"]["webhook_secret"] == "********"
    assert r.json()["webhook_url"].endswith("/hooks/knots/api")

    listed = client.get("/api/v1/knots", headers=alice)
    assert [k["name"] for k in listed.json()] == ["api", "app"] and secret not in listed.text
    one = client.get("/api/v1/knots/api", headers=alice)
    assert one.json()["webhook_secret"] is None and secret not in one.text

    bad = client.put("/api/v1/knots/api", json={**body, "git_url": "-uhoh"}, headers=alice)
    assert bad.status_code == 400 and "git_url" in bad.json()["errors"]
    keep = {**body, "test_command": "true", "triggers": {"webhook_secret": "********"}}
    r = client.put("/api/v1/knots/api", json=keep, headers=alice)
    assert r.status_code == 200 and r.json()["webhook_secret"] is None
    knot = get_knot(fs.engine, "api")
    assert knot.test_command == "true" and knot.triggers.webhook_secret == secret

    bob = bearer(client, "bob", ("read", "write"))
    assert client.put("/api/v1/knots/api", json=keep, headers=bob).status_code == 403
    assert client.delete("/api/v1/knots/api", headers=bob).status_code == 403
    assert client.delete("/api/v1/knots/api", headers=alice).status_code == 204
    assert client.get("/api/v1/knots/api", headers=alice).status_code == 404


def test_the_knots_api_needs_write_scope_and_documents_itself(client: TestClient) -> None:
    body = {"name": "ro", "git_url": "https://git.example/alice/ro.git", "repository": "alice/ro"}
    reader = bearer(client, "alice", ("read",))
    assert client.post("/api/v1/knots", json=body, headers=reader).status_code == 403
    assert client.post("/api/v1/knots", json=body).status_code == 401
    viewer = bearer(client, "victor", ("read",))
    assert client.get("/api/v1/knots", headers=viewer).status_code == 200
    # A browser session needs its CSRF token in the header.
    csrf = login(client, "alice")
    assert client.post("/api/v1/knots", json=body).status_code == 403
    r = client.post("/api/v1/knots", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201, r.text
    paths = client.get("/api/openapi.json").json()["paths"]
    assert set(paths["/api/v1/knots"]) == {"get", "post"}
    assert set(paths["/api/v1/knots/{name}"]) == {"get", "put", "delete"}
    schema = paths["/api/v1/knots"]["post"]["requestBody"]["content"]["application/json"]
    assert schema["schema"] == {"$ref": "#/components/schemas/Knot"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        # A hook command runs on the factory worker: a shell for whoever sets it.
        ({"hooks": {"command": "cat /proc/self/environ"}}, "hooks.command"),
        # A local repository reads the worker's disk.
        ({"git_url": "/etc"}, "git_url"),
        ({"git_url": "file:///var/lib/asterfleet"}, "git_url"),
    ],
)
def test_hook_commands_and_local_repositories_are_for_admins_only(
    client: TestClient, fs: FactoryState, change: dict[str, Any], field: str
) -> None:
    body: dict[str, Any] = {
        "name": "web",
        "git_url": "https://git.example/alice/web.git",
        "repository": "alice/web",
        "owners": ["alice"],
        **change,
    }
    refused = client.post("/api/v1/knots", json=body, headers=bearer(client, "alice", ("write",)))
    assert refused.status_code == 400
    assert "only an admin" in refused.json()["errors"][field]
    # Nor by editing a knot alice owns.
    edit = client.put(
        "/api/v1/knots/app",
        json={**body, "name": "app", "repository": "alice/app"},
        headers=bearer(client, "alice", ("write",)),
    )
    assert edit.status_code == 400 and field in edit.json()["errors"]
    assert get_knot(fs.engine, "app").hooks.command is None
    # The console form says it next to the field.
    csrf = login(client, "alice")
    form = {"deploy_command": "id"} if field == "hooks.command" else {"git_url": body["git_url"]}
    page = client.post("/knots/new", data={**knot_form(**form), "csrf_token": csrf})
    assert page.status_code == 400 and "only an admin" in page.text
    # An admin may (and alice's later edits keep what the admin set).
    allowed = client.post(
        "/api/v1/knots",
        json={**body, "owners": ["alice"]},
        headers=bearer(client, "root", ("read", "write")),
    )
    assert allowed.status_code == 201, allowed.text


def test_knots_and_builds_are_shown_only_to_who_may_pull_them(
    client: TestClient, fs: FactoryState
) -> None:
    from asterfleet.factory.store import edit_knot

    edit_knot(
        fs.engine,
        "app",
        {
            "git_url": "https://alice:ghp_tokentoken@git.example/alice/app.git",
            "hooks": {"command": "deploy.sh", "notify_url": "https://hooks.example/x"},
        },
    )
    queue_build = client.app.state.factory.engine  # type: ignore[attr-defined]
    from asterfleet.factory import queue

    queue.enqueue(queue_build, "app", "refs/heads/main", None, "manual")
    # bob is an operator with no access to alice/: the knot does not exist for him.
    bob = bearer(client, "bob", ("read",))
    assert [k["name"] for k in client.get("/api/v1/knots", headers=bob).json()] == []
    assert client.get("/api/v1/knots/app", headers=bob).status_code == 404
    login(client, "bob")
    assert "alice/app" not in client.get("/knots").text
    for path in ("/knots/app", "/knots/app/builds/1", "/knots/app/builds/1/log.txt"):
        assert client.get(path).status_code == 404, path
    # alice owns it; with a read-only token she sees it, credentials masked,
    # hooks hidden (only an editor sees them).
    alice_ro = bearer(client, "alice", ("read",))
    [spec] = client.get("/api/v1/knots", headers=alice_ro).json()
    assert spec["git_url"] == "https://alice:********@git.example/alice/app.git"
    assert spec["hooks"] and set(spec["hooks"].values()) == {None}
    one = client.get("/api/v1/knots/app", headers=alice_ro).json()["knot"]
    assert "ghp_tokentoken" not in str(one) and one["hooks"]["command"] is None
    # Sending the masked URL back keeps the real one.
    alice_rw = bearer(client, "alice", ("read", "write"))
    full = client.get("/api/v1/knots/app", headers=alice_rw).json()["knot"]
    assert full["hooks"]["command"] == "deploy.sh"
    full["triggers"]["webhook_secret"] = None
    assert client.put("/api/v1/knots/app", json=full, headers=alice_rw).status_code == 200
    assert get_knot(fs.engine, "app").git_url.startswith("https://alice:ghp_tokentoken@")


# -- secret build args ----------------------------------------------------------------

TOKEN = "tok-4f9a1c77e2b0d35a"  # a secret build arg's value: must never come back out


def test_a_secret_build_arg_is_never_shown_again(
    client: TestClient, fs: FactoryState, app_parts: tuple[TestClient, FactoryState, str]
) -> None:
    csrf = login(client, "alice")
    r = client.post(
        "/knots/new",
        data={**knot_form(secret_build_args=f"API_TOKEN={TOKEN}"), "csrf_token": csrf},
    )
    assert r.status_code == 303, r.text
    assert get_knot(fs.engine, "web").secret_build_args == {"API_TOKEN": TOKEN}
    edit_page = client.get("/knots/web/edit").text
    assert "API_TOKEN=********</textarea>" in edit_page
    alice = bearer(client, "alice", ("read",))
    outputs = [
        edit_page,
        *(client.get(p).text for p in ("/knots", "/knots/web", "/knots/web/remove")),
        *(client.get(p, headers=alice).text for p in ("/api/v1/knots", "/api/v1/knots/web")),
        json.dumps(cli_show(app_parts[2], "web")),
        CliRunner().invoke(knot_cli, ["ls", "--json", "--db", app_parts[2]]).output,
    ]
    assert all(TOKEN not in text for text in outputs)
    assert cli_show(app_parts[2], "web")["secret_build_args"] == {"API_TOKEN": "********"}
    # A form that fails validation does not echo a value typed into it either.
    bad = client.post(
        "/knots/web/edit",
        data={
            **knot_form(git_url="-x", secret_build_args=f"API_TOKEN=********\nNEW={TOKEN}x"),
            "csrf_token": csrf,
        },
    )
    assert bad.status_code == 400 and TOKEN not in bad.text
    assert "API_TOKEN=********\nNEW=</textarea>" in bad.text


def test_saving_the_form_keeps_a_masked_secret_and_drops_a_removed_one(
    client: TestClient, fs: FactoryState
) -> None:
    csrf = login(client, "alice")
    lines = f"API_TOKEN={TOKEN}\nOTHER=two"
    client.post("/knots/new", data={**knot_form(secret_build_args=lines), "csrf_token": csrf})
    r = client.post(
        "/knots/web/edit",
        data={
            **knot_form(secret_build_args="API_TOKEN=********", build_args="VERSION=2"),
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 303, r.text
    knot = get_knot(fs.engine, "web")
    assert knot.secret_build_args == {"API_TOKEN": TOKEN}
    assert knot.build_args == {"VERSION": "2"}  # FLAVOUR, removed from the form, is gone
    # A mask with nothing stored behind it is an error next to the field.
    r = client.post(
        "/knots/web/edit",
        data={**knot_form(secret_build_args="MISSING=********"), "csrf_token": csrf},
    )
    assert r.status_code == 400 and 'id="secret_build_args-error"' in r.text


def test_the_knots_api_keeps_a_masked_secret_build_arg(
    client: TestClient, fs: FactoryState
) -> None:
    alice = bearer(client, "alice", ("read", "write"))
    body = {
        "name": "api",
        "git_url": "https://git.example/alice/api.git",
        "repository": "alice/api",
        "owners": ["alice"],
        "secret_build_args": {"API_TOKEN": TOKEN},
    }
    r = client.post("/api/v1/knots", json=body, headers=alice)
    assert r.status_code == 201 and TOKEN not in r.text
    assert r.json()["knot"]["secret_build_args"] == {"API_TOKEN": "********"}
    r = client.put(
        "/api/v1/knots/api",
        json={**body, "test_command": "true", "secret_build_args": {"API_TOKEN": "********"}},
        headers=alice,
    )
    assert r.status_code == 200 and TOKEN not in r.text
    assert get_knot(fs.engine, "api").secret_build_args == {"API_TOKEN": TOKEN}
    both = {**body, "build_args": {"API_TOKEN": "x"}}
    r = client.put("/api/v1/knots/api", json=both, headers=alice)
    assert r.status_code == 400 and TOKEN not in r.text


def test_the_rollout_cluster_is_set_in_the_form_as_with_knot_add_rollout(
    client: TestClient, app_parts: tuple[TestClient, FactoryState, str]
) -> None:
    factory_db = app_parts[2]
    csrf = login(client, "alice")
    form = client.get("/knots/new")
    assert field_value(form.text, "deploy_rollout") == ""
    r = client.post(
        "/knots/new", data={**knot_form(deploy_rollout="no such/cluster"), "csrf_token": csrf}
    )
    assert r.status_code == 400
    error = re.search(r'id="deploy_rollout-error"[^>]*>([^<]*)<', r.text)
    assert error and error.group(1), "the bad cluster name is reported next to its field"
    assert field_value(r.text, "deploy_rollout") == "no such/cluster"

    r = client.post("/knots/new", data={**knot_form(deploy_rollout="prod"), "csrf_token": csrf})
    assert r.status_code == 303, r.text
    assert cli_show(factory_db, "web")["hooks"]["rollout"] == "prod"

    # Set from the CLI, it shows in the form, and a console edit keeps it.
    edited = CliRunner().invoke(
        knot_cli, ["edit", "app", "--set", "hooks.rollout=staging", "--db", factory_db]
    )
    assert edited.exit_code == 0, edited.output
    page = client.get("/knots/app/edit").text
    assert field_value(page, "deploy_rollout") == "staging"
    r = client.post(
        "/knots/app/edit",
        data={
            **knot_form(
                repository="alice/app",
                git_url="/src/app",
                deploy_rollout=field_value(page, "deploy_rollout"),
            ),
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 303, r.text
    assert cli_show(factory_db, "app")["hooks"]["rollout"] == "staging"
    # Emptied in the form: no rollout any more.
    r = client.post(
        "/knots/app/edit",
        data={
            **knot_form(repository="alice/app", git_url="/src/app", deploy_rollout=""),
            "csrf_token": csrf,
        },
    )
    assert r.status_code == 303, r.text
    assert cli_show(factory_db, "app")["hooks"]["rollout"] is None
