"""Pull/merge requests on GitHub, Gitea/Forgejo and GitLab, through their APIs.

``api_url`` is the API root: ``https://api.github.com``,
``https://codeberg.org/api/v1`` (Gitea/Forgejo), ``https://gitlab.com/api/v4``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from asterfleet.errors import AsterfleetError
from asterfleet.releases.config import Forge


class ForgeError(AsterfleetError):
    """The forge's API refused or failed."""


def _headers(forge: Forge, token: str) -> dict[str, str]:
    if forge.kind == "github":
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
        }
    if forge.kind == "gitea":
        return {"Authorization": f"token {token}"}
    return {"PRIVATE-TOKEN": token}


def _call(client: httpx.Client, forge: Forge, token: str, method: str, path: str, **kw: Any) -> Any:
    url = forge.api() + path
    try:
        resp = client.request(method, url, headers=_headers(forge, token), **kw)
    except httpx.HTTPError as exc:
        raise ForgeError(f"forge {method} {url}: {exc}") from None
    if resp.status_code >= 300:
        raise ForgeError(f"forge {method} {url}: HTTP {resp.status_code} {resp.text[:200]}")
    try:
        return resp.json()
    except ValueError:
        raise ForgeError(f"forge {method} {url}: the answer is not JSON") from None


def find_open(client: httpx.Client, forge: Forge, token: str, head: str) -> str | None:
    """The URL of an open request from branch ``head``, if there is one."""
    p = forge.project
    if forge.kind == "github":
        owner = p.split("/", 1)[0]
        items = _call(
            client,
            forge,
            token,
            "GET",
            f"/repos/{p}/pulls",
            params={"state": "open", "head": f"{owner}:{head}"},
        )
        key, url_key = ("head", "html_url")
    elif forge.kind == "gitea":
        items = _call(client, forge, token, "GET", f"/repos/{p}/pulls", params={"state": "open"})
        key, url_key = ("head", "html_url")
    else:
        items = _call(
            client,
            forge,
            token,
            "GET",
            f"/projects/{quote(p, safe='')}/merge_requests",
            params={"state": "opened", "source_branch": head},
        )
        key, url_key = ("source_branch", "web_url")
    for item in items if isinstance(items, list) else []:
        ref = item.get(key)
        ref = ref.get("ref") if isinstance(ref, dict) else ref
        if ref == head:
            return str(item.get(url_key))
    return None


def open_request(
    client: httpx.Client, forge: Forge, token: str, *, head: str, base: str, title: str, body: str
) -> str:
    """Open a pull (merge) request from ``head`` into ``base``; its URL."""
    p = forge.project
    if forge.kind in ("github", "gitea"):
        made = _call(
            client,
            forge,
            token,
            "POST",
            f"/repos/{p}/pulls",
            json={"title": title, "head": head, "base": base, "body": body},
        )
        return str(made.get("html_url"))
    made = _call(
        client,
        forge,
        token,
        "POST",
        f"/projects/{quote(p, safe='')}/merge_requests",
        json={
            "source_branch": head,
            "target_branch": base,
            "title": title,
            "description": body,
            "remove_source_branch": True,
        },
    )
    return str(made.get("web_url"))
