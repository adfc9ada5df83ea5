"""Issue 10.13: schemathesis against the console's JSON API, in three modes.

Every generated request is sent with no credentials, with a read-only token and
with an admin token (scopes read and write). Checks: no 500, every status and
body as the OpenAPI document says, and no change without the write scope: not
to etcd (the fleet API) and not to the factory's knots (the knots API). One
test, one console, both APIs. Bounded: a few examples per operation, so it
stays well under a minute.
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
from sqlalchemy import select

from asterfleet.auth import add_user, create_token
from asterfleet.console import ConsoleSettings, create_app
from asterfleet.console.images_settings import ImagesSettings
from asterfleet.db import open_database
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.schema import factory_knots
from asterfleet.factory.store import add_knot
from asterfleet.fleet.keys import Keyspace
from asterfleet.registry.config import write_config
from tests.unit.console_fakes import FakeEtcd, put_node

KS = Keyspace("test")
API = r"^/api/v1/(fleet|nodes|balancers|events|knots|calls|stats)"


class Console:
    def __init__(
        self, client: TestClient, etcd: FakeEtcd, reader: str, admin: str, scraper: str
    ) -> None:
        self.client, self.etcd, self.scraper = client, etcd, scraper
        self.modes: dict[str, dict[str, str]] = {
            "anonymous": {},
            "read-only": {"Authorization": f"Bearer {reader}"},
            "admin": {"Authorization": f"Bearer {admin}"},
        }

    def state(self) -> tuple[dict[str, Any], list[Any]]:
        """What a request could change: the fleet in etcd, the knots' rows."""
        engine = self.client.app.state.factory.engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            knots = [tuple(r) for r in conn.execute(select(factory_knots).order_by("name"))]
        return {k: v.value for k, v in self.etcd.data.items()}, knots


def console_settings(tmp: Path) -> ConsoleSettings:
    """A console with the image factory configured, so the knots API answers."""
    write_config(
        tmp / "registry", realm="http://127.0.0.1:9/token", service="t", listen="127.0.0.1:9"
    )
    images = ImagesSettings(
        registry_dir=tmp / "registry",
        factory_db=f"sqlite:///{tmp / 'factory.db'}",
        registry_host="registry.example:5000",
        reconcile_interval=3600,
        login_cache_seconds=0,
    )
    capture = f"sqlite:///{tmp / 'capture.db'}"
    return ConsoleSettings(cluster="test", watch=False, images=images, capture_db=capture)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    db = open_database(str(tmp_path / "console.db"))
    add_user(db, "alice", "s3cret-pass")
    reader = create_token(db, "alice", "reader", ("read",)).token
    admin = create_token(db, "alice", "admin", ("read", "write")).token
    scraper = create_token(db, "alice", "scraper", ("metrics",)).token
    etcd = FakeEtcd()
    put_node(etcd, KS, "node-1")
    app = create_app(
        console_settings(tmp_path),
        db=db,
        etcd_factory=lambda _eps: etcd,  # type: ignore[arg-type,return-value]
    )
    add_knot(
        app.state.factory.engine,
        validate_knot(
            {
                "name": "app",
                "git_url": "https://git.example/alice/app.git",
                "repository": "alice/app",
                "owners": ["alice"],
            }
        ),
    )
    with TestClient(app, follow_redirects=False) as client:
        yield Console(client, etcd, reader, admin, scraper)


def _openapi() -> dict[str, Any]:
    """The console's own OpenAPI document (no server, no etcd needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(console_settings(Path(tmp)), db=open_database(f"{tmp}/c.db"))
        return app.openapi()


schema = schemathesis.openapi.from_dict(_openapi()).include(path_regex=API)


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_console_api_holds_in_three_modes(case: Any, console: Console) -> None:
    for mode, auth in console.modes.items():
        before = console.state()
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
        if mode != "admin":
            assert console.state() == before, f"{mode} changed state: {case.method} {case.path}"
            if case.method != "GET":
                assert response.status_code in (400, 401, 403, 405, 413, 422), (
                    mode,
                    response.status_code,
                )


def test_both_apis_are_under_test() -> None:
    """The filter above must not quietly drop an API (a renamed prefix)."""
    paths = {result.ok().path for result in schema.get_all_operations()}
    assert {"/api/v1/fleet", "/api/v1/knots", "/api/v1/knots/{name}"} <= paths


@pytest.mark.parametrize(
    "path", ["/api/v1/calls?limit=x", "/api/v1/calls/x", "/api/v1/stats?window=x", "/api/v1/fleet"]
)
def test_a_metrics_token_reads_nothing_but_metrics(console: Console, path: str) -> None:
    # Scope is checked before the query: 403 even where the query is invalid.
    auth = {"Authorization": f"Bearer {console.scraper}"}
    response = console.client.get(path, headers=auth)
    assert response.status_code == 403, response.text
    assert console.client.get("/metrics", headers=auth).status_code == 200
