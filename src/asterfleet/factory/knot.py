"""A knot: one build definition (git source, Dockerfile, image, tag rules,
test command, triggers, owners, hooks), and the pure rules that decide which
refs it builds and which tags a build gets."""

from __future__ import annotations

import fnmatch
import re
import shlex
import string
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from asterfleet.errors import UsageError
from asterfleet.registry.scope import REPOSITORY_RE

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_TEMPLATE_FIELDS = {"name", "sha", "short_sha", "version"}
GIT_SCHEMES = ("https", "http", "ssh", "git", "file")
_SCP_RE = re.compile(r"^(?:[A-Za-z0-9._~-]+@)?[A-Za-z0-9.-]+:[^:]+$")
RESERVED_NAMES = frozenset({"new"})  # /knots/new is the console's add form


def check_git_url(url: str) -> str:
    """``url`` if git may clone it safely, else ValueError saying what to give.

    Refused on purpose: a leading ``-`` (git would read an option) and
    ``transport::address`` (remote helpers such as ``ext::`` run commands).
    """
    hint = "use https://HOST/PATH, ssh://HOST/PATH, git://…, file://…, USER@HOST:PATH or /PATH"
    if not url:
        raise ValueError(f"give the repository's URL ({hint})")
    if url.startswith("-") or "::" in url or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"{url!r} is not a git URL: {hint}")
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in GIT_SCHEMES or (parts.scheme != "file" and not parts.hostname):
            raise ValueError(f"{url!r} is not a git URL: {hint}")
        return url
    if url.startswith("/") or _SCP_RE.match(url):
        return url
    raise ValueError(f"{url!r} is not a git URL: {hint}")


def check_tag_template(template: str) -> None:
    """ValueError unless every replacement field of ``template`` is a plain
    known field: ``{name}``, never ``{name:>9999}`` or ``{name.__class__}``
    (the worker formats it, so anything else is a way into its memory)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{template!r} is not a tag template: {exc}") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in _TEMPLATE_FIELDS:
            if field.isidentifier():
                raise ValueError(f"unknown field {{{field}}} (use {sorted(_TEMPLATE_FIELDS)})")
            raise ValueError(f"{{{field}}}: use a plain field, one of {sorted(_TEMPLATE_FIELDS)}")
        if spec or conversion:
            raise ValueError(
                f"{{{field}}} with a format or conversion: use a plain field such as {{{field}}}"
            )


class TagRule(BaseModel):
    """``kind`` ref whose name matches the glob ``match`` is tagged ``tag``
    (a template with {name}, {version} = name without a leading v, {sha},
    {short_sha})."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["branch", "tag"]
    match: str = "*"
    tag: str = "{name}"

    @field_validator("tag")
    @classmethod
    def _template(cls, value: str) -> str:
        check_tag_template(value)
        return value


class Triggers(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhook_secret: str | None = None  # enables /hooks/knots/NAME
    # Accept deliveries signed the way this provider signs (None: any of them).
    webhook_provider: Literal["github", "gitea", "gitlab"] | None = None
    git_poll_seconds: int | None = Field(default=None, ge=10)
    url: str | None = None  # polled for changes (ETag / Last-Modified / content hash)
    url_poll_seconds: int = Field(default=300, ge=10)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class Hooks(BaseModel):
    """After a successful build: POST to ``webhook`` and/or run ``command``
    (with ASTERFLEET_IMAGE, ASTERFLEET_DIGEST, ... in its environment).
    ``notify_url`` hears about every finished build, passed or not."""

    model_config = ConfigDict(extra="forbid")
    webhook: str | None = None
    command: str | None = None
    notify_url: str | None = None
    #: Continuous deployment: start a rollout of the pushed image on this
    #: cluster (the worker's --etcd), like `asterfleet rollout start --image`.
    rollout: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def default_tag_rules() -> list[TagRule]:
    return [TagRule(kind="branch"), TagRule(kind="tag")]


class Knot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    git_url: str
    branch: str | None = "main"  # the default branch (gets `latest`)
    tag_pattern: str | None = None  # glob of git tags to build, e.g. "v*"
    dockerfile: str = "Dockerfile"
    context: str = "."
    repository: str  # e.g. alice/app
    tag_rules: list[TagRule] = Field(default_factory=default_tag_rules)
    latest: bool = True
    sha_tag: bool = False
    build_args: dict[str, str] = Field(default_factory=dict)
    # Given to the build as build secrets (``RUN --mount=type=secret,id=NAME``
    # reads /run/secrets/NAME), never as ARGs: an ARG's value is recorded in
    # the image's history, which everyone who may pull the image reads.
    # Sealed in the database; never logged, never shown (masked everywhere).
    secret_build_args: dict[str, str] = Field(default_factory=dict)
    test_command: str | None = None
    triggers: Triggers = Field(default_factory=Triggers)
    owners: list[str] = Field(default_factory=list)
    hooks: Hooks = Field(default_factory=Hooks)
    builder: Literal["buildah", "docker"] = "buildah"
    # RUN steps and the test command get no network (not even the worker's
    # loopback) unless this is set: for builds that must download.
    network: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("use 1-64 lower-case letters, digits or '-'")
        if value in RESERVED_NAMES:
            raise ValueError(f"{value!r} is reserved: choose another name")
        return value

    @field_validator("git_url")
    @classmethod
    def _git_url(cls, value: str) -> str:
        return check_git_url(value)

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not REPOSITORY_RE.match(value) or "/" not in value:
            raise ValueError("use NAMESPACE/NAME in lower case, e.g. alice/app")
        return value

    @field_validator("dockerfile", "context")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a path inside the repository")
        return value

    @field_validator("build_args", "secret_build_args")
    @classmethod
    def _args(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ARG_NAME_RE.match(key):
                raise ValueError(f"build arg name {key!r} is not a valid identifier")
        return value

    @model_validator(mode="after")
    def _secret_or_not(self) -> Knot:
        both = sorted(set(self.build_args) & set(self.secret_build_args))
        if both:
            raise ValueError(
                f"{', '.join(both)}: both a build arg and a secret build arg; keep one"
            )
        return self

    @field_validator("test_command")
    @classmethod
    def _test(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"does not parse as a shell command: {exc}") from exc
        return value


def is_local_git_url(url: str) -> bool:
    """A repository on the worker's own file system (a path or file://)."""
    return url.startswith("/") or urlsplit(url).scheme == "file"


def admin_only_changes(knot: Knot, before: Knot | None) -> dict[str, str]:
    """Field -> why, for what only an admin may set: a hook command (it runs
    on the factory worker) and a local repository (it reads the worker's
    disk). Unchanged values an admin set before stay allowed."""
    problems: dict[str, str] = {}
    if knot.hooks.command and (before is None or before.hooks.command != knot.hooks.command):
        problems["hooks.command"] = (
            "only an admin may set a hook command: it runs on the factory worker "
            "(use a deploy webhook instead)"
        )
    if is_local_git_url(knot.git_url) and (before is None or before.git_url != knot.git_url):
        problems["git_url"] = (
            "only an admin may build from a path on the factory worker: "
            "give an https://, ssh:// or git:// URL"
        )
    if knot.network and (before is None or not before.network):
        problems["network"] = (
            "only an admin may give build steps the network: they would reach "
            "every service on the factory worker's host"
        )
    return problems


class KnotInvalid(UsageError):
    """Input that is not a valid knot. ``errors`` maps each bad field (dotted,
    as in the knot's JSON: ``triggers.url``) to what is wrong with it; the
    message names the first, for the CLI."""

    def __init__(self, errors: dict[str, str]) -> None:
        field, problem = next(iter(errors.items()))
        super().__init__(f"knot {field}: {problem}")
        self.errors = errors


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def knot_errors(exc: ValidationError) -> dict[str, str]:
    """Field -> message for every problem pydantic found (the first per field)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if loc[:1] in (["tag_rules"], ["build_args"], ["secret_build_args"]):
            loc = loc[:1]  # one field in the forms: the rule or argument is in the message
        errors.setdefault(".".join(loc) or "knot", _message(err["msg"]))
    return errors


def validate_knot(data: dict[str, object]) -> Knot:
    """A Knot from user input, or KnotInvalid (a UsageError) naming the bad fields.

    The one validation of knots: the CLI, the console's forms and the JSON
    API all call it.
    """
    try:
        knot = Knot.model_validate(data)
    except ValidationError as exc:
        raise KnotInvalid(knot_errors(exc)) from None
    if knot.branch is None and knot.tag_pattern is None:
        raise KnotInvalid({"branch": "give a branch, a tag pattern, or both"})
    return knot


def branch_of(ref: str) -> str | None:
    return ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else None


def tag_of(ref: str) -> str | None:
    return ref[len("refs/tags/") :] if ref.startswith("refs/tags/") else None


def wants_ref(knot: Knot, ref: str) -> bool:
    """Whether a change to ``ref`` should build this knot."""
    branch, tag = branch_of(ref), tag_of(ref)
    if branch is not None:
        return knot.branch is not None and branch == knot.branch
    if tag is not None:
        return knot.tag_pattern is not None and fnmatch.fnmatchcase(tag, knot.tag_pattern)
    return False


def sanitize_tag(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text).lstrip(".-")[:128]
    return cleaned or "untagged"


def tags_for(knot: Knot, ref: str, sha: str | None) -> list[str]:
    """The image tags a build of ``ref`` at ``sha`` gets, in rule order."""
    branch, tag = branch_of(ref), tag_of(ref)
    kind, name = ("branch", branch) if branch is not None else ("tag", tag)
    if name is None:
        return []
    values = {
        "name": name,
        "version": name[1:] if name[:1] in ("v", "V") and name[1:2].isdigit() else name,
        "sha": sha or "",
        "short_sha": (sha or "")[:12],
    }
    out: list[str] = []
    for rule in knot.tag_rules:
        if rule.kind == kind and fnmatch.fnmatchcase(name, rule.match):
            out.append(sanitize_tag(rule.tag.format(**values)))
    if kind == "branch" and knot.latest and name == knot.branch:
        out.append("latest")
    if knot.sha_tag and sha:
        out.append(sha[:12])
    return [t for t in dict.fromkeys(out) if TAG_RE.match(t)]


def dockerfile_stages(text: str) -> list[str]:
    """Stage names (or indexes as strings) in a Dockerfile, in order."""
    stages: list[str] = []
    joined = re.sub(r"\\\s*\n", " ", text)
    for line in joined.splitlines():
        words = line.strip().split()
        if not words or words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.append(args[2].lower())
        else:
            stages.append(str(len(stages)))
    return stages


def build_targets(text: str) -> tuple[str | None, str | None]:
    """(test target, image target) for a Dockerfile.

    A stage named ``test`` is built first and must succeed; the image pushed
    is the last stage that is not ``test`` (None = the default, last stage).
    """
    stages = dockerfile_stages(text)
    if "test" not in stages:
        return None, None
    if stages[-1] != "test":
        return "test", None
    others = [s for s in stages if s != "test"]
    if not others:
        return "test", None
    return "test", others[-1]
