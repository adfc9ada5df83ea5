"""Builder backends: buildah (the default: chroot isolation, vfs storage,
daemonless) and the docker CLI.

Registry credentials only ever go into a file in a private (0700) temporary
directory, named to the tool by ``--authfile`` or ``DOCKER_CONFIG``; never
into arguments, the environment of a logged command, or the log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from asterfleet.errors import AsterfleetError


class BuildFailed(AsterfleetError):
    """A build step exited non-zero; the message says which."""


class CommandRunner(Protocol):
    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        """Run ``argv``, streaming its output to the build log; the exit code."""


@dataclass(frozen=True)
class Credentials:
    registry: str  # host:port
    username: str
    secret: str


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    image: str  # local name, e.g. localhost/asterfleet/knot:build-12
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None


@contextlib.contextmanager
def private_dir(prefix: str = "af-auth-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def auth_json(creds: Credentials) -> str:
    token = base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()
    return json.dumps({"auths": {creds.registry: {"auth": token}}})


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Builder(Protocol):
    name: str

    def build(self, req: BuildRequest, run: CommandRunner) -> None: ...

    def test(self, image: str, command: str, container: str, run: CommandRunner) -> None: ...

    def push(
        self, image: str, destinations: Sequence[str], creds: Credentials, run: CommandRunner
    ) -> str:
        """Push to every destination; the manifest digest."""

    def remove(self, image: str, run: CommandRunner) -> None: ...


@dataclass
class BuildahBuilder:
    root: Path | None = None  # private storage (tests, several workers on one box)
    runroot: Path | None = None
    storage_driver: str = "vfs"
    isolation: str = "chroot"
    tls_verify: bool = True
    binary: str = "buildah"
    name: str = "buildah"

    def base(self) -> list[str]:
        argv = [self.binary]
        if self.root is not None:
            argv += ["--root", str(self.root)]
        if self.runroot is not None:
            argv += ["--runroot", str(self.runroot)]
        return [*argv, "--storage-driver", self.storage_driver]

    def build_argv(self, req: BuildRequest) -> list[str]:
        argv = [*self.base(), "bud", "--isolation", self.isolation, "-f", str(req.dockerfile)]
        argv += ["-t", req.image]
        for key, value in sorted(req.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        if req.target:
            argv += ["--target", req.target]
        return [*argv, str(req.context)]

    def build(self, req: BuildRequest, run: CommandRunner) -> None:
        if run(self.build_argv(req)) != 0:
            what = f"stage {req.target!r}" if req.target else "image"
            raise BuildFailed(f"building the {what} failed (buildah bud)")

    def test(self, image: str, command: str, container: str, run: CommandRunner) -> None:
        if run([*self.base(), "from", "--name", container, image]) != 0:
            raise BuildFailed("could not create a test container (buildah from)")
        try:
            code = run(
                [
                    *self.base(),
                    "run",
                    "--isolation",
                    self.isolation,
                    container,
                    "--",
                    "/bin/sh",
                    "-c",
                    command,
                ]
            )
        finally:
            run([*self.base(), "rm", container])
        if code != 0:
            raise BuildFailed(f"test command exited {code}")

    def push(
        self, image: str, destinations: Sequence[str], creds: Credentials, run: CommandRunner
    ) -> str:
        digest = ""
        with private_dir() as tmp:
            authfile = tmp / "auth.json"
            _write_private(authfile, auth_json(creds))
            for dest in destinations:
                digestfile = tmp / "digest"
                argv = [
                    *self.base(),
                    "push",
                    "--authfile",
                    str(authfile),
                    "--digestfile",
                    str(digestfile),
                    f"--tls-verify={'true' if self.tls_verify else 'false'}",
                    image,
                    f"docker://{dest}",
                ]
                if run(argv) != 0:
                    raise BuildFailed(f"push to {dest} failed")
                digest = digestfile.read_text().strip()
        return digest

    def remove(self, image: str, run: CommandRunner) -> None:
        run([*self.base(), "rmi", "--force", image])


@dataclass
class DockerBuilder:
    """The docker CLI against whatever engine DOCKER_HOST names."""

    binary: str = "docker"
    name: str = "docker"

    def build(self, req: BuildRequest, run: CommandRunner) -> None:
        argv = [self.binary, "build", "-f", str(req.dockerfile), "-t", req.image]
        for key, value in sorted(req.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        if req.target:
            argv += ["--target", req.target]
        if run([*argv, str(req.context)]) != 0:
            raise BuildFailed("docker build failed")

    def test(self, image: str, command: str, container: str, run: CommandRunner) -> None:
        code = run(
            [
                self.binary,
                "run",
                "--rm",
                "--name",
                container,
                "--entrypoint",
                "/bin/sh",
                image,
                "-c",
                command,
            ]
        )
        if code != 0:
            raise BuildFailed(f"test command exited {code}")

    def push(
        self, image: str, destinations: Sequence[str], creds: Credentials, run: CommandRunner
    ) -> str:
        with private_dir() as tmp:
            _write_private(tmp / "config.json", auth_json(creds))
            env = {"DOCKER_CONFIG": str(tmp)}
            for dest in destinations:
                if run([self.binary, "tag", image, dest]) != 0:
                    raise BuildFailed(f"docker tag {dest} failed")
                if run([self.binary, "push", dest], env=env) != 0:
                    raise BuildFailed(f"push to {dest} failed")
        proc = subprocess.run(
            [self.binary, "inspect", "--format", "{{index .RepoDigests 0}}", image],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        text = proc.stdout.strip()
        return text.rpartition("@")[2]

    def remove(self, image: str, run: CommandRunner) -> None:
        run([self.binary, "rmi", "--force", image])
