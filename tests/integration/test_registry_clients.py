"""The real Distribution registry with asterfleet as its token server,
exercised by the real clients: skopeo and buildah."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asterfleet.auth import add_user, create_token, revoke_token
from asterfleet.registry.catalogue import list_tags, tag_detail
from asterfleet.runtime.ports import free_port
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for
from asterfleet.testing.registry import RegistryLab, registry_lab

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22", "root": "root-secret-333"}


def refused_for_access(done: subprocess.CompletedProcess[str]) -> bool:
    """The client failed because the registry said no, not for any other reason
    (a TLS, network or storage failure also exits non-zero)."""
    said = done.stderr.lower()
    return done.returncode != 0 and any(
        reason in said
        for reason in (
            "unauthorized",
            "requested access to the resource is denied",
            "authentication required",
            "invalid username/password",
        )
    )


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="af-reg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def buildah(work: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    base = [
        require_binary("buildah"),
        "--root",
        str(work / "storage"),
        "--runroot",
        str(work / "run"),
        "--storage-driver",
        "vfs",
    ]
    return subprocess.run(
        [*base, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def image(work: Path) -> str:
    """A tiny image (FROM scratch + static busybox) in private buildah storage,
    also exported as an OCI layout for skopeo."""
    ctx = work / "ctx"
    ctx.mkdir()
    shutil.copy(require_binary("busybox"), ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n'
    )
    done = buildah(work, "bud", "--isolation", "chroot", "-t", "localhost/tiny:1", str(ctx))
    assert done.returncode == 0, done.stderr
    done = buildah(work, "push", "localhost/tiny:1", f"oci:{work / 'oci'}:1")
    assert done.returncode == 0, done.stderr
    return "localhost/tiny:1"


@pytest.fixture(scope="module")
def lab(work: Path) -> Iterator[RegistryLab]:
    # No login memory: revocation must bite at once in these tests.
    with registry_lab(work / "lab", cache_seconds=0, debug_listen=True) as running:
        add_user(running.db, "alice", PASSWORDS["alice"])
        add_user(running.db, "bob", PASSWORDS["bob"])
        add_user(running.db, "root", PASSWORDS["root"], role="admin")
        yield running


def skopeo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("skopeo"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def skopeo_login(lab: RegistryLab, authfile: Path, user: str, secret: str) -> None:
    done = skopeo(
        "login",
        "--authfile",
        str(authfile),
        "--tls-verify=false",
        "-u",
        user,
        "--password-stdin",
        lab.registry_host,
        stdin=secret + "\n",
    )
    assert done.returncode == 0, done.stderr


def test_owner_pushes_with_skopeo_and_catalogue_follows(
    lab: RegistryLab, work: Path, image: str
) -> None:
    auth = work / "alice.json"
    skopeo_login(lab, auth, "alice", PASSWORDS["alice"])
    dest = f"docker://{lab.registry_host}/alice/tiny:1"
    done = skopeo(
        "copy", "--authfile", str(auth), "--dest-tls-verify=false", f"oci:{work / 'oci'}:1", dest
    )
    assert done.returncode == 0, done.stderr
    # The registry's push notification makes the catalogue sync the repository.
    wait_for(lambda: list_tags(lab.engine, "alice/tiny"), timeout=30, what="catalogue tag")
    detail = tag_detail(lab.engine, "alice/tiny", "1")
    assert detail is not None
    assert detail["digest"].startswith("sha256:")
    assert detail["platforms"] == ["linux/amd64"]
    assert len(detail["layers"]) == 1 and detail["size"] > 1_000_000


def test_user_cannot_push_into_another_namespace(lab: RegistryLab, work: Path, image: str) -> None:
    auth = work / "bob.json"
    skopeo_login(lab, auth, "bob", PASSWORDS["bob"])
    done = skopeo(
        "copy",
        "--authfile",
        str(auth),
        "--dest-tls-verify=false",
        f"oci:{work / 'oci'}:1",
        f"docker://{lab.registry_host}/alice/evil:1",
    )
    assert refused_for_access(done), done.stderr
    # ... but into their own, yes.
    done = skopeo(
        "copy",
        "--authfile",
        str(auth),
        "--dest-tls-verify=false",
        f"oci:{work / 'oci'}:1",
        f"docker://{lab.registry_host}/bob/tiny:1",
    )
    assert done.returncode == 0, done.stderr


def test_anonymous_pulls_public_but_not_private(lab: RegistryLab, work: Path, image: str) -> None:
    auth = work / "alice2.json"
    skopeo_login(lab, auth, "alice", PASSWORDS["alice"])
    for repo in ("alice/private", "alice/public"):
        done = skopeo(
            "copy",
            "--authfile",
            str(auth),
            "--dest-tls-verify=false",
            f"oci:{work / 'oci'}:1",
            f"docker://{lab.registry_host}/{repo}:1",
        )
        assert done.returncode == 0, done.stderr
    lab.ownership.set_public("alice/public", True)
    anon = ("inspect", "--no-creds", "--tls-verify=false")
    private = skopeo(*anon, f"docker://{lab.registry_host}/alice/private:1")
    assert refused_for_access(private), private.stderr
    public = skopeo(*anon, f"docker://{lab.registry_host}/alice/public:1")
    assert public.returncode == 0, public.stderr


def test_buildah_login_push_pull(lab: RegistryLab, work: Path, image: str) -> None:
    auth = work / "alice-buildah.json"
    done = buildah(
        work,
        "login",
        "--authfile",
        str(auth),
        "--tls-verify=false",
        "-u",
        "alice",
        "--password-stdin",
        lab.registry_host,
        stdin=PASSWORDS["alice"] + "\n",
    )
    assert done.returncode == 0, done.stderr
    ref = f"docker://{lab.registry_host}/alice/built:2"
    done = buildah(work, "push", "--authfile", str(auth), "--tls-verify=false", image, ref)
    assert done.returncode == 0, done.stderr
    done = buildah(work, "pull", "--authfile", str(auth), "--tls-verify=false", ref)
    assert done.returncode == 0, done.stderr


def test_access_token_scopes_and_revocation(lab: RegistryLab, work: Path, image: str) -> None:
    issued = create_token(lab.db, "alice", "ci pull only", ("pull",))
    secret = issued.token
    auth = work / "alice-token.json"
    skopeo_login(lab, auth, "alice", secret)
    src = f"oci:{work / 'oci'}:1"
    push = skopeo(
        "copy",
        "--authfile",
        str(auth),
        "--dest-tls-verify=false",
        src,
        f"docker://{lab.registry_host}/alice/by-token:1",
    )
    assert refused_for_access(push), f"a pull-only token must not push: {push.stderr}"
    revoke_token(lab.db, issued.id)
    denied = skopeo(
        "login",
        "--authfile",
        str(work / "x.json"),
        "--tls-verify=false",
        "-u",
        "alice",
        "--password-stdin",
        lab.registry_host,
        stdin=secret + "\n",
    )
    assert refused_for_access(denied), f"a revoked token must not log in: {denied.stderr}"


def test_reconcile_finds_every_repository(lab: RegistryLab, work: Path, image: str) -> None:
    auth = work / "root.json"
    skopeo_login(lab, auth, "root", PASSWORDS["root"])
    done = skopeo(
        "copy",
        "--authfile",
        str(auth),
        "--dest-tls-verify=false",
        f"oci:{work / 'oci'}:1",
        f"docker://{lab.registry_host}/root/tiny:7",
    )
    assert done.returncode == 0, done.stderr
    assert lab.catalogue.reconcile() >= 2
    assert [t["tag"] for t in list_tags(lab.engine, "root/tiny")] == ["7"]
    lab.catalogue.delete_tag("root/tiny", "7")
    assert list_tags(lab.engine, "root/tiny") == []


def _status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=5).status_code


def test_metrics_need_a_metrics_token_or_a_private_listener(lab: RegistryLab, work: Path) -> None:
    """Neither the token server's nor Distribution's metrics answer anyone on
    the addresses registry clients use."""
    skopeo_login(lab, work / "metrics-login.json", "alice", PASSWORDS["alice"])
    scrape = create_token(lab.db, "alice", "prometheus", ("metrics",)).token
    pull = create_token(lab.db, "alice", "ci pull", ("pull",)).token

    # The token server: only Prometheus' token, and it counted that login.
    metrics = f"http://127.0.0.1:{lab.token_port}/metrics"
    assert _status(metrics) == 401
    assert _status(metrics, pull) == 403
    resp = httpx.get(metrics, headers={"Authorization": f"Bearer {scrape}"}, timeout=5)
    assert resp.status_code == 200
    assert 'asterfleet_registry_tokens_issued_total{grant="basic"}' in resp.text

    # Distribution: nothing on its client address; its own metrics on the
    # loopback debug listener `registry config --debug-listen :PORT` turned on.
    assert _status(f"http://{lab.registry_host}/metrics") == 404
    assert "127.0.0.1" in (lab.directory / "registry" / "config.yml").read_text().split("debug:")[1]
    served = httpx.get(f"http://127.0.0.1:{lab.debug_port}/metrics", timeout=5)
    assert served.status_code == 200 and "registry_http_requests_total" in served.text

    # `registry serve --metrics-listen`: the same metrics without a login on a
    # separate address; on --port they still need the token.
    port, private = free_port(), free_port()
    server = ManagedProcess(
        "registry-serve",
        [sys.executable, "-m", "asterfleet", "registry", "serve",
         "--config-dir", str(lab.directory / "registry"), "--port", str(port),
         "--db", f"sqlite:///{lab.directory / 'factory.db'}",
         "--console-db", str(lab.directory / "console.db"),
         "--metrics-listen", f"127.0.0.1:{private}"],
        work / "registry-serve.log",
    ).start()  # fmt: skip
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/healthz") == 200, 30, what="serve")
        assert _status(f"http://127.0.0.1:{port}/metrics") == 401
        open_metrics = httpx.get(f"http://127.0.0.1:{private}/metrics", timeout=5)
        assert open_metrics.status_code == 200
        assert "asterfleet_registry_tokens_issued_total" in open_metrics.text
    finally:
        server.stop(grace=5)
