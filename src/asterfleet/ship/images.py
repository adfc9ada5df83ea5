"""Build asterfleet's OCI images (``make images``).

``python -m asterfleet.ship.images [--builder podman|docker] [NAME…]`` builds,
in order: ``base`` (Debian 12 from a local debootstrap root, never pulled),
``asterfleet`` (the package and its pinned dependencies), ``etcd``,
``kamailio-lb`` and ``testbox``. Each is tagged
``localhost/asterfleet/NAME:VERSION`` and labelled with the version, the git
revision and the source.

What makes a second build fast: the debootstrap root and the dependency
wheels are cached outside the clone (``/var/cache/asterfleet`` or
``ASTERFLEET_IMAGE_CACHE``) and rebuilt when missing; the builder's layer
cache does the rest (apt downloads go to a cache mount). asterfleet's own
wheel is built with a fixed ``SOURCE_DATE_EPOCH``, so unchanged sources give
a byte-identical wheel and a cached layer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from asterfleet import __version__
from asterfleet.errors import AsterfleetError
from asterfleet.ship.podman import Podman

IMAGES = ("base", "asterfleet", "etcd", "kamailio-lb", "testbox")
SOURCE = "https://github.com/asterfleet/asterfleet"
DEFAULT_CACHE = Path("/var/cache/asterfleet")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# Paths left out of the root tarball: kernel filesystems and caches.
_ROOTFS_EXCLUDES = ("./proc/*", "./sys/*", "./dev/*", "./var/cache/apt/*", "./var/lib/apt/lists/*")


class ImageBuildError(AsterfleetError):
    """An image could not be built."""


def image_ref(name: str, version: str = __version__) -> str:
    """The local name of one of asterfleet's images."""
    return f"localhost/asterfleet/{name}:{version}"


def debian_mirror(sources: str) -> str:
    """The Debian mirror in an apt sources file (deb822 or one-line format).

    Returns the first ``URIs:`` (or ``deb URL``) whose suites include bookworm
    and that is not the security archive; the default mirror when none is.
    """
    for stanza in sources.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
        uri = fields.get("uris", "").split()
        if uri and SUITE in fields.get("suites", "").split() and "security" not in uri[0]:
            return uri[0].rstrip("/")
    for line in sources.splitlines():
        words = line.split()
        urls = [i for i, w in enumerate(words) if "://" in w]
        if words[:1] == ["deb"] and urls and urls[0] + 1 < len(words):
            url, suite = words[urls[0]], words[urls[0] + 1]
            if suite == SUITE and "security" not in url:
                return url.rstrip("/")
    return DEFAULT_MIRROR


def machine_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The mirror this machine's apt uses for bookworm."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    files += sorted((apt_dir / "sources.list.d").glob("*.list"))
    text = "\n\n".join(f.read_text(errors="replace") for f in files if f.is_file())
    return debian_mirror(text)


def _run(argv: Sequence[str], **kwargs: object) -> None:
    done = subprocess.run(list(argv), check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise ImageBuildError(f"{argv[0]} failed with code {done.returncode}: {' '.join(argv)}")


def git_revision(repo: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


# Zip timestamps of asterfleet's own wheel: fixed, so that unchanged sources
# give a byte-identical wheel (and a cached layer) whatever the commit.
_SOURCE_DATE_EPOCH = "315532800"


@dataclass
class ImageBuilder:
    """Builds the images of one checkout with podman (default) or docker."""

    repo: Path
    cache: Path = DEFAULT_CACHE
    builder: str = "podman"
    podman: Podman | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.builder not in ("podman", "docker"):
            raise ImageBuildError(f"builder {self.builder!r} is not podman or docker")
        if self.builder == "podman" and self.podman is None:
            self.podman = Podman.from_env()

    def log(self, text: str) -> None:
        if not self.quiet:
            print(f"asterfleet images: {text}", flush=True)

    # ----- inputs cached outside the clone -----

    def rootfs(self) -> Path:
        """The Debian 12 root tarball, made with debootstrap when missing."""
        target = self.cache / f"rootfs-{SUITE}-minbase.tar"
        if target.is_file():
            return target
        debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin")
        if debootstrap is None:
            raise ImageBuildError("debootstrap is missing: run scripts/ensure-deps.sh")
        self.cache.mkdir(parents=True, exist_ok=True)
        mirror = machine_mirror()
        self.log(f"debootstrap {SUITE} from {mirror} (once; cached in {target})")
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="rootfs-") as tmp:
            root = Path(tmp) / "root"
            _run([debootstrap, "--variant=minbase", "--include=ca-certificates", SUITE,
                  str(root), mirror])  # fmt: skip
            excludes = [f"--exclude={p}" for p in _ROOTFS_EXCLUDES]
            partial = Path(tmp) / "rootfs.tar"
            _run(["tar", "-C", str(root), "--numeric-owner", *excludes, "-cf", str(partial), "."])
            partial.replace(target)
        return target

    def dependency_wheels(self) -> Path:
        """Wheels of every pinned runtime dependency, keyed by that list."""
        with open(self.repo / "pyproject.toml", "rb") as f:
            deps = tomllib.load(f)["project"]["dependencies"]
        key = hashlib.sha256("\n".join(sorted(deps)).encode()).hexdigest()[:16]
        target = self.cache / f"wheels-{key}"
        if target.is_dir():
            return target
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log("building dependency wheels (once per pyproject.toml)")
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="wheels-") as tmp:
            out = Path(tmp) / "w"
            _run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(out),
                  str(self.repo)])  # fmt: skip
            for own in out.glob("asterfleet-*.whl"):
                own.unlink()
            out.replace(target)
        return target

    def app_wheel(self, into: Path) -> None:
        """asterfleet's own wheel, reproducible for unchanged sources."""
        into.mkdir(parents=True)
        env = {**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH}
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(into),
              str(self.repo)], env=env)  # fmt: skip

    # ----- builds -----

    def build_args(self) -> list[str]:
        args = {
            "VERSION": __version__,
            "REVISION": git_revision(self.repo),
            "SOURCE": SOURCE,
            "BASE": image_ref("base"),
            "ASTERFLEET": image_ref("asterfleet"),
        }
        return [item for k, v in args.items() for item in ("--build-arg", f"{k}={v}")]

    def build_one(self, name: str) -> None:
        images = self.repo / "images"
        with tempfile.TemporaryDirectory(prefix="af-image-") as tmp:
            if name == "base":
                context = Path(tmp)
                os.link(self.rootfs(), context / "rootfs.tar")
            elif name == "asterfleet":
                context = Path(tmp) / "ctx"
                shutil.copytree(images / name, context)
                shutil.copytree(self.dependency_wheels(), context / "wheels" / "deps")
                self.app_wheel(context / "wheels" / "app")
            else:
                context = images / name
            containerfile = images / name / "Containerfile"
            started = time.monotonic()
            self._build(containerfile, context, image_ref(name))
            self.log(f"{image_ref(name)} built in {time.monotonic() - started:.1f} s")

    def _build(self, containerfile: Path, context: Path, tag: str) -> None:
        common = ["-f", str(containerfile), "-t", tag, *self.build_args()]
        if self.builder == "docker":
            _run(["docker", "build", *common, str(context)])
            return
        assert self.podman is not None
        self.podman.prepare()
        # docker format keeps HEALTHCHECK; host network only for apt while building.
        flags = ["--format", "docker", "--network", "host", "--layers"]
        argv = self.podman.argv(
            ["build", *flags, *self.podman.build_ulimits(), *common, str(context)]
        )
        _run(argv, env=self.podman.env(), stdout=subprocess.DEVNULL if self.quiet else None)

    def build(self, names: Sequence[str] = IMAGES) -> None:
        unknown = [n for n in names if n not in IMAGES]
        if unknown:
            raise ImageBuildError(f"unknown image {unknown[0]!r}: choose from {', '.join(IMAGES)}")
        for name in IMAGES:
            if name in names:
                self.build_one(name)

    def sizes(self) -> dict[str, int]:
        """Each built image's size in bytes (podman only)."""
        assert self.podman is not None
        out: dict[str, int] = {}
        for name in IMAGES:
            done = self.podman.run("image", "inspect", "--format", "{{.Size}}", image_ref(name),
                                   check=False)  # fmt: skip
            if done.returncode == 0:
                out[name] = int(done.stdout.strip())
        return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asterfleet.ship.images",
        description="Build asterfleet's OCI images (base, asterfleet, etcd, kamailio-lb, "
        "testbox) as localhost/asterfleet/NAME:VERSION.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"images to build [{' '.join(IMAGES)}]"
    )
    parser.add_argument("--builder", default="podman", choices=("podman", "docker"))
    cache = Path(os.environ.get("ASTERFLEET_IMAGE_CACHE", DEFAULT_CACHE))
    parser.add_argument(
        "--cache", type=Path, default=cache,
        help="debootstrap root and wheels, kept between builds [%(default)s]",
    )  # fmt: skip
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the checkout [.]")
    args = parser.parse_args(argv)
    try:
        builder = ImageBuilder(args.repo.resolve(), args.cache, args.builder)
        started = time.monotonic()
        builder.build(args.names or IMAGES)
        if args.builder == "podman":
            for name, size in builder.sizes().items():
                print(f"{image_ref(name):45} {size / 1e6:7.1f} MB")
        print(f"asterfleet images: done in {time.monotonic() - started:.1f} s")
    except AsterfleetError as exc:
        print(f"asterfleet images: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
