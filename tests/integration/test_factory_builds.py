"""A knot built end to end: a local git repository, a signed webhook, the
worker running buildah, the test command inside the image, the push to the
real registry, and the tag appearing in the catalogue."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asterfleet.auth import add_user
from asterfleet.factory import queue
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.logs import read_log
from asterfleet.factory.schema import metadata as factory_tables
from asterfleet.factory.store import add_knot
from asterfleet.factory.web import knot_webhook_router
from asterfleet.factory.worker import Worker, WorkerSettings
from asterfleet.registry.catalogue import list_tags, tag_detail
from asterfleet.runtime.process import require_binary, wait_for
from asterfleet.testing.registry import RegistryLab, registry_lab

pytestmark = pytest.mark.integration

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /etc
COPY motd /etc/motd
CMD ["/bin/busybox", "cat", "/etc/motd"]
"""


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="af-fac-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def make_repo(path: Path, dockerfile: str) -> str:
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    shutil.copy(require_binary("busybox"), path / "busybox")
    (path / "motd").write_text("hello from a knot\n")
    (path / "Dockerfile").write_text(dockerfile)
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "image")
    return git(path, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def lab(work: Path) -> Iterator[RegistryLab]:
    with registry_lab(work / "lab", extra_routers=lambda e: [knot_webhook_router(e)]) as running:
        factory_tables.create_all(running.engine)  # the factory shares the lab's store
        add_user(running.db, "alice", "alice-secret-1")
        yield running


@pytest.fixture(scope="module")
def worker(lab: RegistryLab, work: Path) -> Worker:
    settings = WorkerSettings(
        registry=lab.registry_host,
        tls_verify=False,
        worker_id="test-worker",
        workdir=work,
        buildah_root=work / "buildah-root",
        buildah_runroot=work / "buildah-run",
        heartbeat=0.5,
    )
    return Worker(lab.engine, settings, lab.db)


def signed_push(url: str, secret: str, ref: str, sha: str, delivery: str) -> httpx.Response:
    body = json.dumps({"ref": ref, "after": sha, "deleted": False}).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sig,
        "Content-Type": "application/json",
    }
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_webhook_build_test_push_and_catalogue(
    lab: RegistryLab, worker: Worker, work: Path
) -> None:
    sha = make_repo(work / "repo-good", DOCKERFILE)
    deployed = work / "deployed.txt"
    add_knot(
        lab.engine,
        validate_knot(
            {
                "name": "good",
                "git_url": str(work / "repo-good"),
                "repository": "alice/good",
                "owners": ["alice"],
                "sha_tag": True,
                "test_command": "/bin/busybox grep -q 'hello from a knot' /etc/motd",
                "triggers": {"webhook_secret": "s3cret-hook"},
                "hooks": {"command": f'echo "$ASTERFLEET_IMAGE" > {deployed}'},
            }
        ),
    )
    hook = f"http://127.0.0.1:{lab.token_port}/hooks/knots/good"
    first = signed_push(hook, "s3cret-hook", "refs/heads/main", sha, "d-1")
    assert first.status_code == 202, first.text
    # The same delivery again is ignored; a second push while queued joins.
    assert "repeated" in signed_push(hook, "s3cret-hook", "refs/heads/main", sha, "d-1").text
    # The same commit under a new delivery id is a replay, not a new push.
    assert "repeated" in signed_push(hook, "s3cret-hook", "refs/heads/main", sha, "d-2").text
    bad_sig = signed_push(hook, "wrong", "refs/heads/main", sha, "d-3")
    assert bad_sig.status_code == 401
    other_branch = signed_push(hook, "s3cret-hook", "refs/heads/dev", sha, "d-4")
    assert "does not match" in other_branch.text

    [build] = worker.run_until_idle()
    log_text = read_log(lab.engine, build.id)[0]
    assert build.state == "passed", log_text
    assert build.number == 1 and build.digest and build.digest.startswith("sha256:")
    assert set(build.tags) == {"main", "latest", sha[:12]}
    assert "aft_" not in log_text and "--authfile" in log_text
    assert deployed.read_text().strip() == f"{lab.registry_host}/alice/good@{build.digest}"
    # The registry's notifications bring the tags into the catalogue.
    wait_for(
        lambda: len(list_tags(lab.engine, "alice/good")) == 3,
        timeout=30,
        what="three tags in the catalogue",
    )
    detail = tag_detail(lab.engine, "alice/good", "latest")
    assert detail is not None and detail["digest"] == build.digest
    assert queue.build_of_digest(lab.engine, build.digest) == {
        "knot": "good",
        "number": 1,
        "id": build.id,
    }


@pytest.mark.parametrize(
    ("name", "dockerfile", "test_command"),
    [
        ("bad-command", DOCKERFILE, "/bin/busybox false"),
        (
            "bad-stage",
            DOCKERFILE + "FROM scratch AS test\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "false"]\n',
            None,
        ),
    ],
)
def test_failing_test_pushes_nothing(
    lab: RegistryLab,
    worker: Worker,
    work: Path,
    name: str,
    dockerfile: str,
    test_command: str | None,
) -> None:
    make_repo(work / f"repo-{name}", dockerfile)
    add_knot(
        lab.engine,
        validate_knot(
            {
                "name": name,
                "git_url": str(work / f"repo-{name}"),
                "repository": f"alice/{name}",
                "owners": ["alice"],
                "test_command": test_command,
            }
        ),
    )
    queue.enqueue(lab.engine, name, "refs/heads/main", None, "manual")
    [build] = worker.run_until_idle()
    assert build.state == "failed"
    assert build.reason is not None and build.reason.startswith("test failed")
    assert lab.catalogue.client.tags(f"alice/{name}") == []
