"""Conditional HTTP GET of a feed: ETag, Last-Modified and a content hash.

A 304 answer, or a 200 whose body hashes to the one seen last time, is
"unchanged": the cached body is used and nothing new needs proposing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import httpx

from asterfleet.errors import AsterfleetError
from asterfleet.releases.state import FeedCache

Freshness = Literal["not-modified", "unchanged", "changed"]
USER_AGENT = "asterfleet-releases"


class FeedError(AsterfleetError):
    """A feed or checksum file could not be fetched."""


@dataclass(frozen=True)
class Fetched:
    body: str
    freshness: Freshness
    cache: FeedCache


def fetch_feed(client: httpx.Client, url: str, cache: FeedCache | None) -> Fetched:
    headers = {"User-Agent": USER_AGENT}
    if cache is not None and cache.body:
        if cache.etag:
            headers["If-None-Match"] = cache.etag
        if cache.last_modified:
            headers["If-Modified-Since"] = cache.last_modified
    try:
        resp = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise FeedError(f"feed {url}: {exc}") from None
    if resp.status_code == 304 and cache is not None:
        return Fetched(cache.body, "not-modified", cache)
    if resp.status_code != 200:
        raise FeedError(f"feed {url}: HTTP {resp.status_code}")
    body = resp.text
    digest = hashlib.sha256(resp.content).hexdigest()
    new = FeedCache(
        etag=resp.headers.get("ETag"),
        last_modified=resp.headers.get("Last-Modified"),
        sha256=digest,
        body=body,
    )
    same = cache is not None and cache.sha256 == digest
    return Fetched(body, "unchanged" if same else "changed", new)


def fetch_text(client: httpx.Client, url: str, what: str) -> str:
    try:
        resp = client.get(url, headers={"User-Agent": USER_AGENT})
    except httpx.HTTPError as exc:
        raise FeedError(f"{what} {url}: {exc}") from None
    if resp.status_code != 200:
        raise FeedError(f"{what} {url}: HTTP {resp.status_code}")
    return resp.text
