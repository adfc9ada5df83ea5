"""The watcher's configuration file (TOML).

::

    state_file = "/var/lib/asterfleet/releases.json"

    [repository]                 # the image repository, a local clone
    path = "/srv/asterfleet"
    remote = "origin"
    base = "main"                # the branch proposals target
    containerfile = "images/asterisk/Containerfile"

    [forge]                      # where pull/merge requests are opened
    kind = "github"              # github, gitea (also Forgejo), gitlab
    api_url = "https://api.github.com"
    project = "asterfleet/asterfleet"
    token_file = "/etc/asterfleet/forge-token"   # or token_env = "FORGE_TOKEN"

    [notify]
    webhook_url = "https://hooks.slack.com/services/..."

    [[branch]]
    name = "22"                  # or "20", "certified-20.7"
    mode = "pull-request"        # or "push": commit straight onto `base`
    # feed_kind = "directory"    # or "github"; feed_url = "..."
    # base = "asterisk-22"; containerfile = "..."; prereleases = false

    [irc]                        # optional: reports, and !status !check !build !rollout
    server = "irc.example.net:6697"
    tls = true
    channel = "#asterfleet"
    allow = ["alice", "bob"]     # who may run !check, !build, !rollout
    console_url = "https://console.example.net"
    knots = { "22" = "asterisk-22" }
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from asterfleet.errors import UsageError
from asterfleet.releases.feed import GITHUB_URL, OFFICIAL_CERTIFIED_URL, OFFICIAL_URL
from asterfleet.releases.version import check_branch

ForgeKind = Literal["github", "gitea", "gitlab"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Repository(_Strict):
    path: Path
    remote: str = "origin"
    base: str = "main"
    containerfile: str = "images/asterisk/Containerfile"


class Forge(_Strict):
    kind: ForgeKind
    api_url: str = ""
    project: str
    token_file: Path | None = None
    token_env: str | None = None

    def api(self) -> str:
        if self.api_url:
            return self.api_url.rstrip("/")
        if self.kind == "github":
            return "https://api.github.com"
        raise UsageError(f"[forge] api_url is required for kind {self.kind!r}")

    def token(self) -> str:
        """The API token, from its file or environment variable (never argv)."""
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise UsageError(f"[forge] token_file {self.token_file}: {exc.strerror}") from None
        elif self.token_env is not None:
            token = os.environ.get(self.token_env, "").strip()
        else:
            raise UsageError("[forge] needs token_file or token_env")
        if not token:
            raise UsageError("[forge] the token is empty; put it in token_file or token_env")
        return token


class Notify(_Strict):
    webhook_url: str | None = None


class Irc(_Strict):
    """The IRC channel the watcher reports to and takes commands in."""

    server: str  # host:port
    tls: bool = False
    nick: str = "asterfleet"
    channel: str = "#asterfleet"
    allow: tuple[str, ...] = ()  # nicks that may run !check, !build and !rollout
    console_url: str = ""  # build logs are linked there, never pasted
    knots: dict[str, str] = {}  # tracked branch -> the knot that builds its image
    build_command: tuple[str, ...] = ("asterfleet", "knot", "build", "{knot}", "--json")
    rollout_command: tuple[str, ...] = (
        "asterfleet", "rollout", "start", "--cluster", "{cluster}", "--version", "{version}",
        "--by", "irc:{nick}",
    )  # fmt: skip

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not HOST:PORT (for example irc.example.net:6697)")
        return value

    def address(self) -> tuple[str, int]:
        host, _, port = self.server.rpartition(":")
        return host.strip("[]"), int(port)


class Branch(_Strict):
    name: str
    mode: Literal["pull-request", "push"] = "pull-request"
    feed_kind: Literal["directory", "github"] = "directory"
    feed_url: str | None = None
    base: str | None = None
    containerfile: str | None = None
    prereleases: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_branch(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    def url(self) -> str:
        if self.feed_url:
            return self.feed_url
        if self.feed_kind == "github":
            return GITHUB_URL
        return OFFICIAL_CERTIFIED_URL if self.name.startswith("certified-") else OFFICIAL_URL


class Config(_Strict):
    state_file: Path
    repository: Repository
    forge: Forge | None = None
    notify: Notify = Notify()
    irc: Irc | None = None
    branches: tuple[Branch, ...] = Field(alias="branch", min_length=1)

    def base_of(self, branch: Branch) -> str:
        return branch.base or self.repository.base

    def containerfile_of(self, branch: Branch) -> str:
        return branch.containerfile or self.repository.containerfile


def parse_config(text: str, source: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {source}: not TOML ({exc}); fix the file") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"config {source}: {where}: {first['msg']}") from None
    names = [b.name for b in config.branches]
    if len(set(names)) != len(names):
        raise UsageError(f"config {source}: a branch is listed twice: {names}")
    if any(b.mode == "pull-request" for b in config.branches) and config.forge is None:
        raise UsageError(f"config {source}: pull-request branches need a [forge] section")
    base = Path(source).parent
    if not config.repository.path.is_absolute():
        repo = config.repository.model_copy(update={"path": base / config.repository.path})
        config = config.model_copy(update={"repository": repo})
    if not config.state_file.is_absolute():
        config = config.model_copy(update={"state_file": base / config.state_file})
    return config


def load_config(path: Path) -> Config:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"config {path}: {exc.strerror}; pass --config FILE") from None
    return parse_config(text, str(path))
