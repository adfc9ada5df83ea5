"""A knot as people type it. The CLI's flags and the console's form fields are
the same text (``KEY=VALUE`` build args, ``branch:GLOB=TAG`` tag rules, one
per flag or line); :func:`validate_input` turns it into a :class:`Knot`
through :func:`validate_knot`, once, for both.

Webhook secrets and secret build args are write-only: :func:`public_spec`
masks them, :func:`resolve_webhook_secret` keeps, generates or drops a
webhook secret and :func:`resolve_secret_build_args` keeps a secret build
arg given as ``NAME=********``, without the caller ever having to send a
stored secret back.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from asterfleet.errors import UsageError
from asterfleet.factory.knot import Knot, KnotInvalid, TagRule, knot_errors, validate_knot

MASK = "********"  # stands for the stored secret: "keep it"
GENERATE = "generate"  # asks for a new random secret, shown once

# Knot JSON path -> input field, where they differ.
_FIELD_OF = {
    "triggers.webhook_secret": "webhook",
    "triggers.webhook_provider": "webhook_provider",
    "triggers.git_poll_seconds": "git_poll_seconds",
    "triggers.url": "poll_url",
    "triggers.url_poll_seconds": "poll_url_seconds",
    "hooks.webhook": "deploy_webhook",
    "hooks.command": "deploy_command",
    "hooks.notify_url": "notify_url",
    "hooks.rollout": "deploy_rollout",
}


@dataclass
class KnotInput:
    """Every field of a knot as text; empty means "not set"."""

    name: str = ""
    git_url: str = ""
    repository: str = ""
    branch: str = "main"  # the default branch, tagged `latest`
    tag_pattern: str = ""
    dockerfile: str = "Dockerfile"
    context: str = "."
    tag_rules: list[str] | None = None  # None: the default rules
    latest: bool = True
    sha_tag: bool = False
    build_args: list[str] = field(default_factory=list)
    # NAME=VALUE; NAME=******** keeps the stored value (the form shows that).
    secret_build_args: list[str] = field(default_factory=list)
    test_command: str = ""
    owners: list[str] = field(default_factory=list)
    webhook: bool = False
    webhook_provider: str = ""  # github, gitea, gitlab; empty: any
    git_poll_seconds: str = ""
    poll_url: str = ""
    poll_url_seconds: str = "300"
    deploy_webhook: str = ""
    deploy_command: str = ""
    notify_url: str = ""
    deploy_rollout: str = ""  # a cluster name
    builder: str = "buildah"


def new_webhook_secret() -> str:
    return secrets.token_urlsafe(24)


def parse_pairs(values: list[str], what: str) -> dict[str, str]:
    """``KEY=VALUE`` texts as a dict; UsageError naming ``what`` otherwise."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {value!r}: expected KEY=VALUE")
        out[key] = val
    return out


def parse_tag_rule(text: str, what: str = "--tag-rule") -> dict[str, str]:
    """``branch:GLOB=TAG`` or ``tag:GLOB=TAG`` (e.g. ``tag:v*={version}``)."""
    head, sep, tag = text.partition("=")
    kind, _, match = head.partition(":")
    if not sep or kind not in ("branch", "tag"):
        raise UsageError(f"{what} {text!r}: expected branch:GLOB=TAG or tag:GLOB=TAG")
    try:
        rule = TagRule(kind=kind, match=match or "*", tag=tag)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise UsageError(f"{what} {text!r}: {next(iter(knot_errors(exc).values()))}") from None
    return rule.model_dump()


def format_tag_rule(rule: TagRule) -> str:
    return f"{rule.kind}:{rule.match}={rule.tag}"


def _or_none(text: str) -> str | None:
    return text.strip() or None


def resolve_secret_build_args(
    requested: Mapping[str, str], current: Mapping[str, str]
) -> dict[str, str]:
    """The secret build args to store: a value :data:`MASK` keeps the stored
    one; a name left out is dropped; UsageError for a MASK with nothing stored."""
    out: dict[str, str] = {}
    for name, value in requested.items():
        if value == MASK:
            if name not in current:
                raise UsageError(f"secret build arg {name}: nothing stored to keep: give its value")
            out[name] = current[name]
        else:
            out[name] = value
    return out


def _secret_pairs(values: list[str]) -> dict[str, str]:
    """Like :func:`parse_pairs`, but never echoes a value in the error."""
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UsageError(f"secret build arg {key.strip()[:40]!r}…: expected NAME=VALUE")
        out[key.strip()] = val
    return out


def knot_data(
    inp: KnotInput, webhook_secret: str | None, current_secrets: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The knot JSON for ``inp``; KnotInvalid for build args or tag rules
    that do not parse (the rest is checked by :func:`validate_knot`).
    ``current_secrets``: the stored secret build args a MASK keeps."""
    errors: dict[str, str] = {}
    try:
        build_args = parse_pairs(inp.build_args, "build arg")
    except UsageError as exc:
        errors["build_args"], build_args = str(exc), {}
    try:
        secret_build_args = resolve_secret_build_args(
            _secret_pairs(inp.secret_build_args), current_secrets or {}
        )
    except UsageError as exc:
        errors["secret_build_args"], secret_build_args = str(exc), {}
    data: dict[str, Any] = {
        "name": inp.name.strip(),
        "git_url": inp.git_url.strip(),
        "repository": inp.repository.strip(),
        "branch": _or_none(inp.branch),
        "tag_pattern": _or_none(inp.tag_pattern),
        "dockerfile": inp.dockerfile.strip() or "Dockerfile",
        "context": inp.context.strip() or ".",
        "latest": inp.latest,
        "sha_tag": inp.sha_tag,
        "build_args": build_args,
        "secret_build_args": secret_build_args,
        "test_command": _or_none(inp.test_command),
        "owners": [o.strip() for o in inp.owners if o.strip()],
        "builder": inp.builder.strip() or "buildah",
        "triggers": {
            "webhook_secret": webhook_secret if inp.webhook else None,
            "webhook_provider": _or_none(inp.webhook_provider) if inp.webhook else None,
            "git_poll_seconds": _or_none(inp.git_poll_seconds),
            "url": _or_none(inp.poll_url),
            "url_poll_seconds": inp.poll_url_seconds.strip() or "300",
        },
        "hooks": {
            "webhook": _or_none(inp.deploy_webhook),
            "command": _or_none(inp.deploy_command),
            "notify_url": _or_none(inp.notify_url),
            "rollout": _or_none(inp.deploy_rollout),
        },
    }
    if inp.tag_rules is not None:
        rules = []
        for text in inp.tag_rules:
            try:
                rules.append(parse_tag_rule(text, "tag rule"))
            except UsageError as exc:
                errors.setdefault("tag_rules", str(exc))
        data["tag_rules"] = rules
    if errors:
        raise KnotInvalid(errors)
    return data


def input_field(path: str) -> str:
    """The input field a knot JSON path (``triggers.url``) is typed in."""
    return _FIELD_OF.get(path, path.split(".", 1)[0])


def validate_input(
    inp: KnotInput, webhook_secret: str | None, current_secrets: Mapping[str, str] | None = None
) -> Knot:
    """The knot ``inp`` describes, or KnotInvalid keyed by input field.

    Every problem is reported at once (parse errors and model errors), so a
    form can show each one next to its field. ``current_secrets``: the
    stored secret build args (when editing), kept where ``inp`` says MASK.
    """
    errors: dict[str, str] = {}
    try:
        data = knot_data(inp, webhook_secret, current_secrets)
    except KnotInvalid as exc:
        errors.update(exc.errors)
        data = knot_data(
            replace(inp, build_args=[], secret_build_args=[], tag_rules=[]), webhook_secret
        )
    try:
        knot = validate_knot(data)
    except KnotInvalid as exc:
        for path, problem in exc.errors.items():
            errors.setdefault(input_field(path), problem)
        raise KnotInvalid(errors) from None
    if errors:
        raise KnotInvalid(errors)
    return knot


def to_input(knot: Knot) -> KnotInput:
    """The form for editing ``knot`` (no secret in it: the webhook secret is
    left out, each secret build arg reads NAME=********)."""
    return KnotInput(
        name=knot.name,
        git_url=knot.git_url,
        repository=knot.repository,
        branch=knot.branch or "",
        tag_pattern=knot.tag_pattern or "",
        dockerfile=knot.dockerfile,
        context=knot.context,
        tag_rules=[format_tag_rule(r) for r in knot.tag_rules],
        latest=knot.latest,
        sha_tag=knot.sha_tag,
        build_args=[f"{k}={v}" for k, v in knot.build_args.items()],
        secret_build_args=[f"{k}={MASK}" for k in knot.secret_build_args],
        test_command=knot.test_command or "",
        owners=list(knot.owners),
        webhook=knot.triggers.webhook_secret is not None,
        webhook_provider=knot.triggers.webhook_provider or "",
        git_poll_seconds=str(knot.triggers.git_poll_seconds or ""),
        poll_url=knot.triggers.url or "",
        poll_url_seconds=str(knot.triggers.url_poll_seconds),
        deploy_webhook=knot.hooks.webhook or "",
        deploy_command=knot.hooks.command or "",
        notify_url=knot.hooks.notify_url or "",
        deploy_rollout=knot.hooks.rollout or "",
        builder=knot.builder,
    )


def resolve_webhook_secret(requested: str | None, current: str | None) -> tuple[str | None, bool]:
    """(secret to store, whether it is new and must be shown once).

    ``requested``: None or "" turns the webhook off; :data:`GENERATE` makes a
    new secret; :data:`MASK` keeps the current one (or makes one if there is
    none); anything else is the caller's own secret, stored and never echoed.
    """
    if not requested:
        return None, False
    if requested == MASK:
        return (current, False) if current else (new_webhook_secret(), True)
    if requested == GENERATE:
        return new_webhook_secret(), True
    return requested, False


def mask_url_credentials(url: str) -> str:
    """``https://user:token@host/x`` shown as ``https://user:********@host/x``."""
    parts = urlsplit(url)
    if "://" not in url or parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def public_spec(knot: Knot, *, hooks: bool = True) -> dict[str, Any]:
    """The knot's JSON with its webhook secret, secret build args and URL
    credentials masked; without ``hooks`` (for those who may not edit it) no
    hook command, deploy webhook or notification URL either."""
    spec = knot.model_dump(mode="json")
    if spec["triggers"].get("webhook_secret"):
        spec["triggers"]["webhook_secret"] = MASK
    spec["secret_build_args"] = dict.fromkeys(knot.secret_build_args, MASK)
    spec["git_url"] = mask_url_credentials(knot.git_url)
    if not hooks:
        spec["hooks"] = dict.fromkeys(spec["hooks"])
    return spec
