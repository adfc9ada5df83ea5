"""One identity, end to end, with real processes: a console started with its
default settings serves /token and the knots' webhooks; the real Distribution
registry trusts it; a factory worker process builds on a signed webhook and
pushes with a short-lived token of the one identity; a user's pull token
pulls the image with skopeo, and cannot push."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from asterfleet.auth import TokenInfo, create_token, list_tokens
from asterfleet.db import open_database
from asterfleet.factory import queue
from asterfleet.factory.knot import validate_knot
from asterfleet.factory.logs import read_log
from asterfleet.factory.store import add_knot
from asterfleet.registry.config import CONFIG_FILE
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for
from tests.integration.console_images import ConsoleWithImages, console_with_images

pytestmark = pytest.mark.integration

USERS = {"alice": "alice-console-pw", "bob": "bob-console-pw"}
HOOK_SECRET = "identity-hook-secret"
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY motd /etc/motd
CMD ["/bin/busybox", "cat", "/etc/motd"]
"""
MOTD = "hello from the one identity\n"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("skopeo"), *args], capture_output=True, text=True, timeout=120, check=False
    )


@dataclass
class Stack:
    console: ConsoleWithImages
    work: Path
    sha: str
    worker: ManagedProcess


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="af-identity-"))
    procs: list[ManagedProcess] = []
    try:
        repo = work / "repos" / "app"
        repo.mkdir(parents=True)
        git(repo, "init", "--quiet", "--initial-branch=main")
        shutil.copy(require_binary("busybox"), repo / "busybox")
        (repo / "motd").write_text(MOTD)
        (repo / "Dockerfile").write_text(DOCKERFILE)
        git(repo, "add", ".")
        git(repo, "commit", "--quiet", "-m", "image")
        sha = git(repo, "rev-parse", "HEAD")
        # The source over git:// on loopback, as a remote repository is reached.
        git_port = free_port()
        git_argv = [
            "git", "daemon", "--reuseaddr", "--export-all", "--listen=127.0.0.1",
            f"--port={git_port}", f"--base-path={work / 'repos'}", str(work / "repos"),
        ]  # fmt: skip
        procs.append(ManagedProcess("git-daemon", git_argv, work / "git-daemon.log").start())
        wait_for(lambda: _answers(git_port), 20, what="git daemon")

        with console_with_images(work, USERS) as console:
            registry = ManagedProcess(
                "docker-registry",
                [require_binary("docker-registry"), "serve", str(work / "registry" / CONFIG_FILE)],
                work / "docker-registry.log",
            ).start()
            procs.append(registry)
            wait_for(
                lambda: (
                    httpx.get(f"http://{console.registry_host}/v2/", timeout=2).status_code == 401
                ),
                20,
                what="docker-registry",
            )
            add_knot(
                console.engine,
                validate_knot(
                    {
                        "name": "app",
                        "git_url": f"git://127.0.0.1:{git_port}/app",
                        "repository": "alice/app",
                        # bob is listed first but may not push to alice/: the worker
                        # must push as alice.
                        "owners": ["bob", "alice"],
                        "triggers": {"webhook_secret": HOOK_SECRET},
                    }
                ),
            )
            worker_argv = [
                str(Path(sys.executable).parent / "asterfleet"),
                "factory", "worker",
                "--registry", console.registry_host, "--insecure",
                "--id", "identity-worker",
                "--buildah-root", str(work / "buildah"),
                "--db", f"sqlite:///{work / 'factory.db'}",
                "--console-db", str(work / "console.db"),
            ]  # fmt: skip
            worker = ManagedProcess(
                "factory-worker", worker_argv, work / "worker.log", env={"TMPDIR": str(work)}
            ).start()
            procs.append(worker)
            yield Stack(console, work, sha, worker)
    finally:
        for proc in reversed(procs):
            proc.stop(grace=10)
        shutil.rmtree(work, ignore_errors=True)


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def signed_push(url: str, sha: str, delivery: str) -> httpx.Response:
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "deleted": False}).encode()
    sig = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sig,
        "Content-Type": "application/json",
    }
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_a_webhook_builds_pushes_and_a_user_token_pulls_but_cannot_push(stack: Stack) -> None:
    console, work = stack.console, stack.work
    hook = signed_push(f"{console.url}/hooks/knots/app", stack.sha, "identity-1")
    assert hook.status_code == 202, hook.text

    def passed() -> bool:
        assert stack.worker.alive(), stack.worker.log_tail()
        build = queue.get_build(console.engine, "app", 1)
        assert build.state not in ("failed", "cancelled"), (
            build.reason,
            read_log(console.engine, build.id)[0][-3000:],
        )
        return build.state == "passed"

    wait_for(passed, 300, interval=0.5, what="build app#1 to pass")
    build = queue.get_build(console.engine, "app", 1)
    log_text = read_log(console.engine, build.id)[0]
    assert build.digest and f"{console.registry_host}/alice/app@{build.digest}" == build.image

    db = open_database(str(work / "console.db"))
    try:
        # The worker's credential was a token of alice (not bob, listed first),
        # limited to the repository, shown nowhere, and revoked after the push.
        def worker_tokens() -> list[TokenInfo]:
            return [t for t in list_tokens(db) if t.name == "build app#1"]

        # The build is marked passed, then the worker revokes its token.
        wait_for(lambda: not worker_tokens()[0].active, 30, what="the push token revoked")
        [worker_token] = worker_tokens()
        assert worker_token.username == "alice"
        assert worker_token.scopes == ("repository:alice/app:pull,push",)
        assert worker_token.revoked_at is not None
        assert "aft_" not in log_text

        # A user's pull token pulls the image: the bytes the Dockerfile put there.
        pull = create_token(db, "alice", "laptop pull", ("pull",)).token
        out = work / "pulled"
        done = skopeo(
            "copy", "--src-tls-verify=false", "--src-creds", f"alice:{pull}",
            f"docker://{console.registry_host}/alice/app:main", f"dir:{out}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert "sha256:" + hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest() == (
            build.digest
        )
        files: dict[str, bytes] = {}
        for layer in manifest["layers"]:
            with tarfile.open(out / layer["digest"].split(":", 1)[1]) as tar:
                for member in tar.getmembers():
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        files[member.name.lstrip("./")] = extracted.read()
        assert files["etc/motd"].decode() == MOTD

        # The same token cannot push; a token with push scope can.
        def push(secret: str, tag: str) -> subprocess.CompletedProcess[str]:
            return skopeo(
                "copy", "--dest-tls-verify=false", "--dest-creds", f"alice:{secret}",
                f"dir:{out}", f"docker://{console.registry_host}/alice/app:{tag}",
            )  # fmt: skip

        refused = push(pull, "by-pull-token")
        assert refused.returncode != 0
        assert "denied" in refused.stderr.lower() or "unauthorized" in refused.stderr.lower(), (
            refused.stderr
        )
        pusher = create_token(db, "alice", "ci push", ("pull", "push")).token
        allowed = push(pusher, "by-push-token")
        assert allowed.returncode == 0, allowed.stderr
        # A console-only token (read, write) has no registry rights at all.
        fleet = create_token(db, "alice", "fleet script", ("read", "write")).token
        nothing = skopeo(
            "inspect", "--tls-verify=false", "--creds", f"alice:{fleet}",
            f"docker://{console.registry_host}/alice/app:main",
        )  # fmt: skip
        assert nothing.returncode != 0
    finally:
        db.close()
