"""Issue 10.13: the console's JSON API as an attacker sees it.

Scope before body, the errors and the bearer scheme in the OpenAPI document,
notes without control characters, one body size limit for the whole app.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from asterfleet.auth import add_user, create_token
from asterfleet.console import ConsoleSettings, create_app
from asterfleet.console.bodylimit import MAX_BODY_BYTES
from asterfleet.db import Database, open_database
from asterfleet.fleet.keys import Keyspace
from tests.unit.console_fakes import FakeEtcd, put_node

KS = Keyspace("test")


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = open_database(str(tmp_path / "console.db"))
    add_user(database, "alice", "s3cret-pass")
    return database


@pytest.fixture
def etcd() -> FakeEtcd:
    fake = FakeEtcd()
    put_node(fake, KS, "node-1")
    return fake


@pytest.fixture
def client(db: Database, etcd: FakeEtcd) -> Iterator[TestClient]:
    settings = ConsoleSettings(cluster="test", watch=False)
    app = create_app(settings, db=db, etcd_factory=lambda _eps: etcd)  # type: ignore[arg-type,return-value]
    with TestClient(app, follow_redirects=False) as c:
        yield c


def bearer(db: Database, *scopes: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {create_token(db, 'alice', 'x' + '-'.join(scopes), scopes).token}"
    }


@pytest.mark.parametrize("body", [{"weight": False}, {"weight": "5"}, {}, {"note": 7}])
def test_a_read_only_write_is_forbidden_whatever_its_body(
    client: TestClient, db: Database, etcd: FakeEtcd, body: dict[str, object]
) -> None:
    before = dict(etcd.data)
    r = client.post("/api/v1/nodes/node-1/weight", json=body, headers=bearer(db, "read"))
    assert r.status_code == 403, r.text
    assert "scope 'write'" in r.json()["detail"]
    assert etcd.data == before


def test_no_token_at_all_is_401_before_the_body(client: TestClient) -> None:
    r = client.post("/api/v1/nodes/node-1/weight", json={"weight": False})
    assert r.status_code == 401


def test_the_openapi_document_declares_the_bearer_scheme_and_the_errors(
    client: TestClient,
) -> None:
    doc = client.get("/api/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    for path in ("/api/v1/fleet", "/api/v1/nodes/{node_id}/weight", "/api/v1/events"):
        for op in doc["paths"][path].values():
            assert {"bearer": []} in op["security"], path
            assert {"401", "403", "404", "413"} <= set(op["responses"]), path


@pytest.mark.parametrize("note", ["a\x00b", "red\x1b[31m", "bell\x07", "line\nbreak", "c1\x9b"])
def test_notes_refuse_nul_and_control_characters(
    client: TestClient, db: Database, etcd: FakeEtcd, note: str
) -> None:
    before = dict(etcd.data)
    r = client.post(
        "/api/v1/nodes/node-1/drain", json={"note": note}, headers=bearer(db, "read", "write")
    )
    assert r.status_code == 422, r.text
    assert etcd.data == before


def test_a_plain_note_is_kept(client: TestClient, db: Database) -> None:
    r = client.post(
        "/api/v1/nodes/node-1/drain",
        json={"note": "kernel update – ticket #42"},
        headers=bearer(db, "read", "write"),
    )
    assert r.status_code == 200 and r.json()["intent"]["note"] == "kernel update – ticket #42"


def test_bodies_over_the_limit_are_refused_before_any_route(
    client: TestClient, db: Database, etcd: FakeEtcd
) -> None:
    before = dict(etcd.data)
    big = b'{"note": "' + b"x" * (5 * MAX_BODY_BYTES) + b'"}'
    for path, headers in (
        ("/api/v1/nodes/node-1/drain", bearer(db, "read", "write")),
        ("/login", {}),
        ("/hooks/knots/none", {}),
    ):
        r = client.post(path, content=big, headers={**headers, "content-type": "application/json"})
        assert r.status_code == 413, (path, r.status_code)
        assert "larger than" in r.json()["detail"]
    assert etcd.data == before


def test_a_streamed_body_without_a_length_is_cut_at_the_limit(
    client: TestClient, db: Database
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(6):
            yield b"x" * MAX_BODY_BYTES

    r = client.post(
        "/api/v1/nodes/node-1/drain",
        content=chunks(),
        headers={**bearer(db, "read", "write"), "content-type": "application/json"},
    )
    assert r.status_code == 413, r.text


def test_the_csrf_check_reads_no_form_without_a_session(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10.11: the session is checked before the form is parsed."""
    from starlette.requests import Request

    parsed: list[str] = []
    real_form = Request.form

    def spy(self: Request, *args: Any, **kwargs: Any) -> Any:
        parsed.append(self.url.path)
        return real_form(self, *args, **kwargs)

    monkeypatch.setattr(Request, "form", spy)
    r = client.post("/logout", data={"csrf_token": "x" * 1000})
    assert r.status_code == 303
    client.cookies.set("af_session", "forged")
    r = client.post("/logout", data={"csrf_token": "x"})
    assert r.status_code == 303
    assert parsed == []
