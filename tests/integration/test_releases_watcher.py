"""The release watcher against real processes: `asterfleet releases check` and
`watch` run as subprocesses against a local HTTP server (release listing,
checksum files, the forge's pull-request API, a webhook) and a bare git
repository as the image repository."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

REPO_ROOT = Path(__file__).parent.parent.parent
CONTAINERFILE = "images/asterisk/Containerfile"
TOKEN = "forge-s3cret-token"
LAST_MODIFIED = "Mon, 30 Nov 2026 10:00:00 GMT"
# Release tarballs: bytes whose digest the checksum files publish.
TARBALLS = {v: f"pretend tarball of Asterisk {v}\n".encode() for v in ("22.11.0", "20.9.0")}


def digest(version: str) -> str:
    return hashlib.sha256(TARBALLS[version]).hexdigest()


def listing() -> bytes:
    """The official listing's shape: an Apache directory index."""
    names = ["asterisk-22-current.tar.gz", "asterisk-22.10.1.tar.gz", "asterisk-22.10.1.sha256"]
    for v in TARBALLS:
        names += [f"asterisk-{v}.tar.gz", f"asterisk-{v}.tar.gz.asc", f"asterisk-{v}.sha256"]
    names += [
        "asterisk-22.12.0-rc1.tar.gz",
        "asterisk-22.12.0-rc1.sha256",
        "asterisk-20.8.1.tar.gz",
    ]
    rows = "".join(
        f'<tr><td valign="top"><img src="/icons/compressed.gif" alt="[   ]"></td>'
        f'<td><a href="{n}">{n}</a></td><td align="right">2026-11-30 10:00  </td>'
        f'<td align="right"> 27M</td></tr>\n'
        for n in sorted(names)
    )
    return (
        "<html><head><title>Index of /pub/telephony/asterisk/releases</title></head><body>"
        "<h1>Index of /pub/telephony/asterisk/releases</h1><table>\n"
        '<tr><td><a href="/pub/telephony/asterisk/">Parent Directory</a></td></tr>\n'
        f"{rows}</table><address>Apache Server</address></body></html>\n"
    ).encode()


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Upstream:
    """Everything the watcher talks to over HTTP, with what it was asked."""

    kind: str  # the forge API it answers: github, gitea, gitlab
    requests: list[Seen] = field(default_factory=list)
    pulls: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api_root(self) -> str:
        return {"github": "/gh", "gitea": "/gitea/api/v1", "gitlab": "/gl/api/v4"}[self.kind]

    def pulls_path(self) -> str:
        if self.kind == "gitlab":
            return self.api_root() + "/projects/ops%2Fimage/merge_requests"
        return self.api_root() + "/repos/ops/image/pulls"

    def seen(self, method: str, path: str) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path == path]


def handler(up: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(
            self, code: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def json_reply(self, code: int, data: Any) -> None:
            self.reply(code, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def record(self) -> Seen:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            seen = Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            with up.lock:
                up.requests.append(seen)
            return seen

        def authorized(self, seen: Seen) -> bool:
            expected = {
                "github": ("authorization", f"Bearer {TOKEN}"),
                "gitea": ("authorization", f"token {TOKEN}"),
                "gitlab": ("private-token", TOKEN),
            }[up.kind]
            return seen.headers.get(expected[0]) == expected[1]

        def do_GET(self) -> None:
            seen = self.record()
            if seen.path == "/pub/telephony/asterisk/releases/":
                body = listing()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.reply(304, headers={"ETag": etag})
                else:
                    self.reply(
                        200,
                        body,
                        {"ETag": etag, "Last-Modified": LAST_MODIFIED, "Content-Type": "text/html"},
                    )
                return
            name = seen.path.rsplit("/", 1)[-1]
            for v in TARBALLS:
                if name == f"asterisk-{v}.sha256":
                    self.reply(200, f"{digest(v)}  asterisk-{v}.tar.gz\n".encode())
                    return
            if seen.path == up.pulls_path():
                if not self.authorized(seen):
                    self.json_reply(401, {"message": "Bad credentials"})
                    return
                with up.lock:
                    items = list(up.pulls)
                if up.kind == "github" and "head" in seen.query:
                    items = [p for p in items if "ops:" + p["head"]["ref"] == seen.query["head"][0]]
                if up.kind == "gitlab" and "source_branch" in seen.query:
                    items = [
                        p for p in items if p["source_branch"] == seen.query["source_branch"][0]
                    ]
                self.json_reply(200, items)
                return
            self.reply(404)

        def do_POST(self) -> None:
            seen = self.record()
            if seen.path == "/hook":
                with up.lock:
                    up.hooks.append(seen.body)
                self.reply(200, b"ok")
                return
            if seen.path == up.pulls_path():
                if not self.authorized(seen):
                    self.json_reply(401, {"message": "Bad credentials"})
                    return
                with up.lock:
                    n = len(up.pulls) + 1
                    if up.kind == "gitlab":
                        made = {
                            "iid": n,
                            "source_branch": seen.body["source_branch"],
                            "web_url": f"{up.url}/ops/image/-/merge_requests/{n}",
                        }
                    else:
                        made = {
                            "number": n,
                            "head": {"ref": seen.body["head"]},
                            "html_url": f"{up.url}/ops/image/pull/{n}",
                        }
                    up.pulls.append(made)
                self.json_reply(201, made)
                return
            self.reply(404)

    return Handler


@pytest.fixture(params=["github", "gitea", "gitlab"])
def upstream(request: pytest.FixtureRequest) -> Iterator[Upstream]:
    up = Upstream(kind=request.param)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(up))
    up.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield up
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t.invalid",
    }
    return subprocess.run(
        ["git", "-C", str(cwd), *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    ).stdout


@dataclass
class ImageRepo:
    bare: Path
    clone: Path

    def show(self, ref: str, path: str = CONTAINERFILE) -> str:
        return git(self.bare, "show", f"{ref}:{path}")

    def branches(self) -> list[str]:
        return git(self.bare, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


@pytest.fixture
def image_repo(tmp_path: Path) -> ImageRepo:
    """A bare repository holding the project's Containerfile on `main` (22.10.1)
    and an older one on `asterisk-20` (20.8.1); a clone the watcher uses."""
    if shutil.which("git") is None:
        pytest.fail("git is not installed (apt-get install git)")
    bare, seed, clone = tmp_path / "image.git", tmp_path / "seed", tmp_path / "clone"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(seed)], check=True)
    (seed / "images" / "asterisk").mkdir(parents=True)
    original = (REPO_ROOT / CONTAINERFILE).read_text()
    (seed / CONTAINERFILE).write_text(original)
    git(seed, "add", ".")
    git(seed, "commit", "--quiet", "-m", "Asterisk image")
    git(seed, "checkout", "--quiet", "-b", "asterisk-20")
    (seed / CONTAINERFILE).write_text(
        original.replace("ARG ASTERISK_VERSION=22.10.1", "ARG ASTERISK_VERSION=20.8.1")
    )
    git(seed, "commit", "--quiet", "-am", "Asterisk 20 image")
    git(seed, "push", "--quiet", str(bare), "main", "asterisk-20")
    subprocess.run(["git", "clone", "--quiet", str(bare), str(clone)], check=True)
    return ImageRepo(bare, clone)


def write_config(tmp_path: Path, up: Upstream, repo: ImageRepo) -> Path:
    token_file = tmp_path / "forge-token"
    token_file.write_text(TOKEN + "\n")
    config = tmp_path / "releases.toml"
    config.write_text(
        f"""
state_file = "{tmp_path / "state" / "releases.json"}"
[repository]
path = "{repo.clone}"
[forge]
kind = "{up.kind}"
api_url = "{up.url}{up.api_root()}"
project = "ops/image"
token_file = "{token_file}"
[notify]
webhook_url = "{up.url}/hook"
[[branch]]
name = "22"
feed_url = "{up.url}/pub/telephony/asterisk/releases/"
[[branch]]
name = "20"
mode = "push"
base = "asterisk-20"
feed_url = "{up.url}/pub/telephony/asterisk/releases/"
"""
    )
    return config


def check(config: Path) -> tuple[int, list[dict[str, Any]], str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "asterfleet",
            "releases",
            "check",
            "--json",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, json.loads(done.stdout or "[]"), done.stderr


def by_branch(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["branch"]: r for r in results}


def test_a_new_release_is_proposed_once(
    tmp_path: Path, upstream: Upstream, image_repo: ImageRepo
) -> None:
    config = write_config(tmp_path, upstream, image_repo)
    main_before = image_repo.show("main")

    rc, results, err = check(config)
    assert rc == 0, err
    r = by_branch(results)
    assert r["22"]["outcome"] == "proposed" and r["22"]["newest"] == "22.11.0"
    assert r["22"]["current"] == "22.10.1" and r["22"]["feed"] == "changed"
    assert r["20"]["outcome"] == "pushed" and r["20"]["newest"] == "20.9.0"

    # One request, from the proposal branch into main, with the forge's auth.
    posts = upstream.seen("POST", upstream.pulls_path())
    assert len(posts) == 1
    body = posts[0].body
    if upstream.kind == "gitlab":
        assert body["source_branch"] == "asterisk/22.11.0" and body["target_branch"] == "main"
        assert posts[0].headers["private-token"] == TOKEN
    else:
        assert body["head"] == "asterisk/22.11.0" and body["base"] == "main"
        scheme = "Bearer" if upstream.kind == "github" else "token"
        assert posts[0].headers["authorization"] == f"{scheme} {TOKEN}"
    assert body["title"] == "Asterisk 22.11.0"
    assert r["22"]["url"] == upstream.pulls[0].get("html_url", upstream.pulls[0].get("web_url"))

    # The branch holds the new version and the digest of the published file.
    proposed = image_repo.show("asterisk/22.11.0")
    assert "ARG ASTERISK_VERSION=22.11.0\n" in proposed
    assert f"ARG ASTERISK_SHA256={digest('22.11.0')}\n" in proposed
    assert "ARG ASTERISK_VERSION=22.10.1" not in proposed
    assert image_repo.show("main") == main_before  # main is the request's to change
    log = git(image_repo.bare, "log", "-1", "--format=%s", "asterisk/22.11.0").strip()
    assert log == "Asterisk 22.11.0: update the image to the new release"
    # Push mode: straight onto the tracked branch's base.
    pushed = image_repo.show("asterisk-20")
    assert "ARG ASTERISK_VERSION=20.9.0\n" in pushed
    assert f"ARG ASTERISK_SHA256={digest('20.9.0')}\n" in pushed
    assert sorted(image_repo.branches()) == ["asterisk-20", "asterisk/22.11.0", "main"]
    # The clone's own checkout was not touched.
    assert git(image_repo.clone, "status", "--porcelain") == ""

    # Notified once per new release, as Slack-compatible JSON.
    texts = sorted(h["text"] for h in upstream.hooks)
    assert len(texts) == 2
    assert "Asterisk 20.9.0" in texts[0] and "pushed to asterisk-20" in texts[0]
    assert "Asterisk 22.11.0" in texts[1] and r["22"]["url"] in texts[1]

    # Second run: the feed answers 304, nothing new is requested or pushed.
    feed = "/pub/telephony/asterisk/releases/"
    rc, results, err = check(config)
    assert rc == 0, err
    r = by_branch(results)
    assert r["22"]["outcome"] == "already-proposed" and r["22"]["feed"] == "not-modified"
    assert r["20"]["outcome"] == "up-to-date" and r["20"]["current"] == "20.9.0"
    second = upstream.seen("GET", feed)[-1]
    assert second.headers.get("if-none-match") and second.headers.get("if-modified-since")
    assert len(upstream.seen("POST", upstream.pulls_path())) == 1
    assert len(upstream.hooks) == 2

    # The state file lost (a new machine): the forge's open request is found.
    shutil.rmtree(tmp_path / "state")
    rc, results, err = check(config)
    assert rc == 0, err
    r = by_branch(results)
    assert r["22"]["outcome"] == "already-proposed" and r["22"]["url"] == results[0]["url"]
    assert r["22"]["feed"] == "changed"  # no validators left to send
    assert len(upstream.seen("POST", upstream.pulls_path())) == 1
    assert len(upstream.seen("GET", upstream.pulls_path())) == 2


@pytest.mark.parametrize("upstream", ["github"], indirect=True)
def test_failures_are_one_line_and_exit_codes(
    tmp_path: Path, upstream: Upstream, image_repo: ImageRepo
) -> None:
    config = write_config(tmp_path, upstream, image_repo)
    # A wrong token: the branch fails with the forge's answer, the other one works.
    (tmp_path / "forge-token").write_text("wrong\n")
    rc, results, _ = check(config)
    r = by_branch(results)
    assert rc == 1
    assert r["22"]["outcome"] == "error" and "HTTP 401" in r["22"]["error"]
    assert r["20"]["outcome"] == "pushed"
    assert any("failed" in h["text"] for h in upstream.hooks)

    # Bad configuration: one line naming the file, exit 2.
    config.write_text(config.read_text().replace('name = "22"', 'name = "22.x"'))
    rc, _, err = check(config)
    assert rc == 2
    assert err.strip().count("\n") == 0 and str(config) in err and "22.x" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    import httpx

    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    values = {}
    for line in text.splitlines():
        if line.startswith("asterfleet_releases_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


@pytest.mark.parametrize("upstream", ["github"], indirect=True)
def test_watch_daemon_checks_and_counts(
    tmp_path: Path, upstream: Upstream, image_repo: ImageRepo
) -> None:
    config = write_config(tmp_path, upstream, image_repo)
    port = free_port()
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "asterfleet", "releases", "watch", "--config", str(config),
         "--interval", "0.2", "--metrics-listen", f"127.0.0.1:{port}", "--log-json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        metrics: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline and metrics.get("asterfleet_releases_checks_total", 0) < 3
        ):
            metrics = scrape(port)
            time.sleep(0.1)
        assert metrics.get("asterfleet_releases_checks_total", 0) >= 3, metrics
        assert metrics["asterfleet_releases_new_total"] == 2  # 22.11.0 proposed, 20.9.0 pushed
        assert metrics["asterfleet_releases_errors_total"] == 0
        last = metrics["asterfleet_releases_last_success_timestamp_seconds"]
        assert started <= last <= time.time()
        assert len(upstream.seen("POST", upstream.pulls_path())) == 1
        assert "ARG ASTERISK_VERSION=22.11.0\n" in image_repo.show("asterisk/22.11.0")
        # Every later check got a 304 for the listing.
        feed = upstream.seen("GET", "/pub/telephony/asterisk/releases/")
        assert len(feed) >= 3 and all(r.headers.get("if-none-match") for r in feed[1:])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    checks = [e for e in events if e.get("event") == "release_check"]
    assert {e["outcome"] for e in checks} >= {"proposed", "pushed", "already-proposed"}
