"""Whom the worker pushes as (issue 10, finding 9): never simply the first
owner a knot's creator listed, but the first listed owner who may push to
the knot's repository now, through the one identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.auth import add_user
from asterfleet.db import open_database
from asterfleet.factory.builder import BuildFailed
from asterfleet.factory.db import open_store
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.worker import Worker, WorkerSettings


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    db = open_database(str(tmp_path / "console.db"))
    for name in ("alice", "mallory"):
        add_user(db, name, "long-password")
    return Worker(open_store(str(tmp_path / "factory.db")), WorkerSettings("127.0.0.1:9"), db)


def knot(owners: list[str], repository: str = "alice/app") -> object:
    return validate_knot(
        {"name": "app", "git_url": "/src/app", "repository": repository, "owners": owners}
    )


@pytest.mark.parametrize(
    ("owners", "repository", "pusher"),
    [
        (["alice"], "alice/app", "alice"),
        # mallory listed first (the creator picks owners freely), but cannot push there.
        (["mallory", "alice"], "alice/app", "alice"),
        # No owners: the namespace's own user.
        ([], "alice/app", "alice"),
        # A listed name with no user behind it is skipped.
        (["ghost", "alice"], "alice/app", "alice"),
    ],
)
def test_the_pusher_is_an_owner_who_may_push(
    worker: Worker, owners: list[str], repository: str, pusher: str
) -> None:
    assert worker.pusher(knot(owners, repository)) == pusher  # type: ignore[arg-type]


def test_no_owner_who_may_push_fails_the_build_with_a_reason(worker: Worker) -> None:
    with pytest.raises(BuildFailed, match=r"no owner of knot app .* may push to alice/app"):
        worker.pusher(knot(["mallory"]))  # type: ignore[arg-type]
    worker.ownership.grant("alice", "mallory", ["push"])
    assert worker.pusher(knot(["mallory"])) == "mallory"  # type: ignore[arg-type]


@pytest.mark.parametrize(("tls_verify", "flag"), [(True, False), (False, True)])
def test_a_worker_without_tls_pulls_from_images_without_it_too(
    tls_verify: bool, flag: bool
) -> None:
    from asterfleet.factory.builder import BuildahBuilder, BuildRequest

    req = BuildRequest(Path("/ctx"), Path("/ctx/Containerfile"), "localhost/knot:build-1")
    argv = BuildahBuilder(tls_verify=tls_verify).build_argv(req)
    assert ("--tls-verify=false" in argv) is flag
    assert argv[-1] == "/ctx"
