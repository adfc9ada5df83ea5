"""Notifications to a webhook, as Slack-compatible JSON (``{"text": ...}``)."""

from __future__ import annotations

import httpx

from asterfleet.errors import AsterfleetError


class NotifyError(AsterfleetError):
    """The webhook refused or did not answer."""


def post_webhook(client: httpx.Client, url: str, text: str) -> None:
    try:
        resp = client.post(url, json={"text": text})
    except httpx.HTTPError as exc:
        raise NotifyError(f"webhook {url}: {exc}") from None
    if resp.status_code >= 300:
        raise NotifyError(f"webhook {url}: HTTP {resp.status_code}")
