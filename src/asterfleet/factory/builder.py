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

# What a build step or a hook command may see of the worker's environment:
# enough to find programs and a temporary directory, never the database URL,
# registry keys or anything else the worker was started with.
SAFE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "http_proxy", "https_proxy", "no_proxy")


def step_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a build step or hook: SAFE_ENV of ours, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in SAFE_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.update(extra or {})
    return env


SECRET_ENV_PREFIX = "ASTERFLEET_BUILD_SECRET_"


def secret_options(secrets: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """(builder options, builder environment) that hand ``secrets`` to a
    build as ``--secret id=NAME,env=VAR``: the values travel in the
    environment of the builder process, readable only by its own user."""
    argv: list[str] = []
    env: dict[str, str] = {}
    for name, value in sorted(secrets.items()):
        var = SECRET_ENV_PREFIX + name
        argv += ["--secret", f"id={name},env={var}"]
        env[var] = value
    return argv, env


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
    # Build secrets: in the builder's environment only (never its argv, which
    # every local user can read), mounted at /run/secrets/NAME for a RUN step.
    secrets: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    network: bool = False  # RUN steps reach the network only when the knot says so


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

    def test(
        self, image: str, command: str, container: str, run: CommandRunner, network: bool = False
    ) -> None: ...

    def push(
        self, image: str, destinations: Sequence[str], creds: Credentials, run: CommandRunner
    ) -> str:
        """Push to every destination; the manifest digest."""

    def remove(self, image: str, run: CommandRunner) -> None: ...


@dataclass
class BuildahBuilder:
    """buildah with OCI isolation under runc: each RUN step (and the test
    command) gets its own network namespace holding only loopback, unless
    the knot declares that it needs the network. Chroot isolation would share
    the worker's network, and with it etcd, the console and the database."""

    root: Path | None = None  # private storage (tests, several workers on one box)
    runroot: Path | None = None
    storage_driver: str = "vfs"
    isolation: str = "oci"
    runtime: str | None = "runc"
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

    def sandbox(self, network: bool) -> list[str]:
        """How a RUN step or the test command is isolated."""
        argv = ["--isolation", self.isolation]
        if self.runtime is not None and self.isolation == "oci":
            argv += ["--runtime", self.runtime]
        return [*argv, "--network", "host" if network else "none"]

    def build_argv(self, req: BuildRequest) -> list[str]:
        argv = [*self.base(), "bud", *self.sandbox(req.network), "-f", str(req.dockerfile)]
        argv += ["-t", req.image]
        if not self.tls_verify:
            # A registry without TLS for pushes is one for FROM images too
            # (a base published there before): pull over plain HTTP as well.
            argv.append("--tls-verify=false")
        for key, value in sorted(req.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv += secret_options(req.secrets)[0]
        if req.target:
            argv += ["--target", req.target]
        return [*argv, str(req.context)]

    def build(self, req: BuildRequest, run: CommandRunner) -> None:
        if run(self.build_argv(req), env=secret_options(req.secrets)[1]) != 0:
            what = f"stage {req.target!r}" if req.target else "image"
            raise BuildFailed(f"building the {what} failed (buildah bud)")

    def test(
        self, image: str, command: str, container: str, run: CommandRunner, network: bool = False
    ) -> None:
        if run([*self.base(), "from", "--name", container, image]) != 0:
            raise BuildFailed("could not create a test container (buildah from)")
        try:
            code = run(
                [
                    *self.base(),
                    "run",
                    *self.sandbox(network),
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
        argv += ["--network", "host" if req.network else "none"]
        for key, value in sorted(req.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        secret_argv, secret_env = secret_options(req.secrets)
        argv += secret_argv
        if req.target:
            argv += ["--target", req.target]
        if run([*argv, str(req.context)], env=secret_env) != 0:
            raise BuildFailed("docker build failed")

    def test(
        self, image: str, command: str, container: str, run: CommandRunner, network: bool = False
    ) -> None:
        code = run(
            [
                self.binary,
                "run",
                "--network",
                "host" if network else "none",
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
