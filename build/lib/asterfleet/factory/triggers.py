"""Webhook deliveries from GitHub, Gitea/Forgejo and GitLab: verification
and parsing, as pure functions over headers and body."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ZERO_SHA = "0" * 40

Provider = Literal["github", "gitea", "gitlab"]


class WebhookError(ValueError):
    """A delivery that must be refused (bad signature, malformed body)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Delivery:
    provider: Provider
    delivery_id: str
    event: str
    ref: str | None  # refs/heads/x or refs/tags/y; None when not a push
    sha: str | None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def provider_of(headers: Mapping[str, str]) -> Provider | None:
    h = _lower(headers)
    # Gitea also sends X-GitHub-Event for compatibility: look at it first.
    if "x-gitea-signature" in h or "x-forgejo-signature" in h or "x-gitea-event" in h:
        return "gitea"
    if "x-gitlab-token" in h or "x-gitlab-event" in h:
        return "gitlab"
    if "x-hub-signature-256" in h or "x-github-event" in h:
        return "github"
    return None


def verify(
    headers: Mapping[str, str], body: bytes, secret: str, only: Provider | None = None
) -> Provider:
    """The provider whose signature over ``body`` checks out with ``secret``.

    Raises WebhookError(401) when the signature is missing or wrong, or when
    the delivery is not from ``only`` (the provider the knot was set up with).
    """
    h = _lower(headers)
    provider = provider_of(h)
    if provider is None:
        raise WebhookError(400, "not a GitHub, Gitea/Forgejo or GitLab delivery")
    if only is not None and provider != only:
        raise WebhookError(401, f"this webhook takes {only} deliveries, not {provider}")
    if provider == "github":
        given = h.get("x-hub-signature-256", "")
        expected = "sha256=" + _hmac_hex(secret, body)
    elif provider == "gitea":
        given = h.get("x-gitea-signature") or h.get("x-forgejo-signature", "")
        expected = _hmac_hex(secret, body)
    else:
        given = h.get("x-gitlab-token", "")
        expected = secret
    if not given or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise WebhookError(401, f"{provider} signature missing or wrong")
    return provider


def parse(provider: Provider, headers: Mapping[str, str], body: bytes) -> Delivery:
    """The ref and commit a verified delivery announces."""
    h = _lower(headers)
    if provider == "github":
        event = h.get("x-github-event", "")
        delivery_id = h.get("x-github-delivery", "")
    elif provider == "gitea":
        event = h.get("x-gitea-event") or h.get("x-forgejo-event") or h.get("x-github-event", "")
        delivery_id = h.get("x-gitea-delivery") or h.get("x-forgejo-delivery", "")
    else:
        event = h.get("x-gitlab-event", "")
        delivery_id = h.get("x-gitlab-event-uuid") or h.get("idempotency-key", "")
    if not delivery_id:
        # No id header: the body itself identifies a repeated delivery.
        delivery_id = "sha256:" + hashlib.sha256(body).hexdigest()
    try:
        payload = json.loads(body) if body else {}
    except ValueError as exc:
        raise WebhookError(400, f"{provider} delivery body is not JSON") from exc
    if not isinstance(payload, dict):
        raise WebhookError(400, f"{provider} delivery body is not a JSON object")
    ref = payload.get("ref")
    sha = payload.get("checkout_sha") or payload.get("after")
    is_push = event in ("push", "Push Hook", "Tag Push Hook") or (
        provider == "gitea" and event == "create"
    )
    if not is_push or not isinstance(ref, str):
        return Delivery(provider, delivery_id[:128], event, None, None)
    if not ref.startswith("refs/"):
        ref = ("refs/tags/" if payload.get("ref_type") == "tag" else "refs/heads/") + ref
    if payload.get("deleted") is True or sha == ZERO_SHA:
        return Delivery(provider, delivery_id[:128], event, None, None)
    return Delivery(provider, delivery_id[:128], event, ref, sha if isinstance(sha, str) else None)
