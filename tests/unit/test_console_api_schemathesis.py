"""Issue 10.13: schemathesis against the console's fleet API, in three modes.

Every generated request is sent with no credentials, with a read-only token and
with an admin token (scopes read and write). Checks: no 500, every status and
body as the OpenAPI document says, and no change to etcd without the write
scope. Bounded: a few examples per operation, so it stays well under a minute.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from asterfleet.auth import add_user, create_token
from asterfleet.console import ConsoleSettings, create_app
from asterfleet.db import open_database
from asterfleet.fleet.keys import Keyspace
from tests.unit.console_fakes import FakeEtcd, put_node

KS = Keyspace("test")
FLEET_API = r"^/api/v1/(fleet|nodes|balancers|events)"


class Console:
    def __init__(self, client: TestClient, etcd: FakeEtcd, reader: str, admin: str) -> None:
        self.client, self.etcd = client, etcd
        self.modes: dict[str, dict[str, str]] = {
            "anonymous": {},
            "read-only": {"Authorization": f"Bearer {reader}"},
            "admin": {"Authorization": f"Bearer {admin}"},
        }


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "alice", "s3cret-pass")
    reader = create_token(db, "alice", "reader", ("read",)).token
    admin = create_token(db, "alice", "admin", ("read", "write")).token
    etcd = FakeEtcd()
    put_node(etcd, KS, "node-1")
    app = create_app(
        ConsoleSettings(cluster="test", watch=False),
        db=db,
        etcd_factory=lambda _eps: etcd,  # type: ignore[arg-type,return-value]
    )
    with TestClient(app, follow_redirects=False) as client:
        yield Console(client, etcd, reader, admin)


def _openapi() -> dict[str, Any]:
    """The console's own OpenAPI document (no server, no etcd needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            ConsoleSettings(cluster="test", watch=False), db=open_database(f"{tmp}/c.db")
        )
        return app.openapi()


schema = schemathesis.openapi.from_dict(_openapi()).include(path_regex=FLEET_API)


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_fleet_api_holds_in_three_modes(case: Any, console: Console) -> None:
    for mode, auth in console.modes.items():
        before = {k: v.value for k, v in console.etcd.data.items()}
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **auth}
        kwargs.pop("cookies", None)
        response = console.client.request(**kwargs)
        assert response.status_code < 500 or response.status_code == 503, (mode, response.text)
        case.validate_response(
            response,
            checks=[
                schemathesis.checks.not_a_server_error,
                schemathesis.checks.status_code_conformance,
                schemathesis.checks.content_type_conformance,
                schemathesis.checks.response_schema_conformance,
            ],
        )
        after = {k: v.value for k, v in console.etcd.data.items()}
        if mode != "admin":
            assert after == before, f"{mode} changed etcd with {case.method} {case.path}"
            if case.method != "GET":
                assert response.status_code in (400, 401, 403, 405, 413, 422), (
                    mode,
                    response.status_code,
                )
