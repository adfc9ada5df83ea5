"""One login for the console and the registry: the console serves /token,
and a console user logs in with skopeo and pushes into their own namespace
of the real Distribution registry (and not into someone else's); the push
notification reaches the console, whose Images page then shows the tag."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from asterfleet.registry.catalogue import list_tags
from asterfleet.registry.config import CONFIG_FILE
from asterfleet.runtime.process import ManagedProcess, require_binary, wait_for
from tests.integration.console_images import ConsoleWithImages, console_with_images

pytestmark = pytest.mark.integration

USERS = {"alice": "alice-console-pw", "bob": "bob-console-pw"}


def write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def tiny_oci_layout(layout: Path, tag: str) -> None:
    """A one-layer image (one text file) as an OCI layout, without a builder."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        content = b"hello from the console test\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    layer_digest, layer_size = write_blob(layout, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2025-01-01T00:00:00Z",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()],
        },
    }
    config_digest, config_size = write_blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = write_blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ConsoleWithImages, Path]]:
    work = Path(tempfile.mkdtemp(prefix="af-creg-"))
    registry: ManagedProcess | None = None
    try:
        with console_with_images(work, USERS) as console:
            registry = ManagedProcess(
                "docker-registry",
                [require_binary("docker-registry"), "serve", str(work / "registry" / CONFIG_FILE)],
                work / "docker-registry.log",
            ).start()

            def answers() -> bool:
                assert registry is not None and registry.alive(), (
                    registry.log_tail() if registry else ""
                )
                return (
                    httpx.get(f"http://{console.registry_host}/v2/", timeout=2).status_code == 401
                )

            wait_for(answers, 20, what="docker-registry")
            tiny_oci_layout(work / "oci", "1")
            yield console, work
    finally:
        if registry is not None:
            registry.stop(grace=5)
        shutil.rmtree(work, ignore_errors=True)


def skopeo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("skopeo"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_console_user_logs_in_to_the_registry_and_pushes_to_their_namespace(
    served: tuple[ConsoleWithImages, Path],
) -> None:
    console, work = served
    auth = str(work / "alice-auth.json")
    login = skopeo(
        "login",
        "--authfile",
        auth,
        "--tls-verify=false",
        "-u",
        "alice",
        "--password-stdin",
        console.registry_host,
        stdin=USERS["alice"] + "\n",
    )
    assert login.returncode == 0, login.stderr
    src = f"oci:{work / 'oci'}:1"
    own = skopeo(
        "copy", "--authfile", auth, "--dest-tls-verify=false", src,
        f"docker://{console.registry_host}/alice/tiny:1",
    )  # fmt: skip
    assert own.returncode == 0, own.stderr
    other = skopeo(
        "copy", "--authfile", auth, "--dest-tls-verify=false", src,
        f"docker://{console.registry_host}/bob/tiny:1",
    )  # fmt: skip
    assert other.returncode != 0
    assert "denied" in other.stderr.lower() or "unauthorized" in other.stderr.lower()

    # The registry notified the console's /hooks/registry; the catalogue follows.
    wait_for(lambda: list_tags(console.engine, "alice/tiny"), 30, what="catalogue tag")
    with httpx.Client(base_url=console.url, follow_redirects=False) as web:
        form = web.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]*)"', form)
        assert csrf
        r = web.post(
            "/login",
            data={"username": "alice", "password": USERS["alice"], "csrf_token": csrf.group(1)},
        )
        assert r.status_code == 303
        page = web.get("/images/alice/tiny/tags/1")
        assert page.status_code == 200
        assert f"docker pull {console.registry_host}/alice/tiny:1" in page.text
        assert "linux/amd64" in page.text
