"""Release feeds: what releases a listing offers, read from its text.

Two shapes are understood:

- ``directory``: the official listing (downloads.asterisk.org), an
  Apache-style directory index with ``asterisk-X.Y.Z.tar.gz`` and, beside
  each, its checksum file ``asterisk-X.Y.Z.sha256`` (``sha256sum`` output);
- ``github``: the GitHub releases API (``/repos/asterisk/asterisk/releases``),
  a JSON list of releases whose assets hold the tarball and its ``.sha256``.

Pure: text in, releases out. Fetching is :mod:`asterfleet.releases.http`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import unquote, urljoin

from asterfleet.errors import UsageError
from asterfleet.releases.version import AsteriskVersion, parse_version

FeedKind = Literal["directory", "github"]
FEED_KINDS: tuple[str, ...] = ("directory", "github")

OFFICIAL_URL = "https://downloads.asterisk.org/pub/telephony/asterisk/releases/"
OFFICIAL_CERTIFIED_URL = "https://downloads.asterisk.org/pub/telephony/certified-asterisk/releases/"
GITHUB_URL = "https://api.github.com/repos/asterisk/asterisk/releases"

_TARBALL = re.compile(r"^asterisk-(?P<version>.+)\.tar\.gz$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Release:
    version: AsteriskVersion
    tarball_url: str
    checksum_url: str | None  # its published SHA-256 file, when the feed has one


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def _checksum_names(v: AsteriskVersion) -> tuple[str, str]:
    return (f"asterisk-{v}.sha256", f"asterisk-{v}.tar.gz.sha256")


def parse_directory(text: str, base_url: str) -> list[Release]:
    """The releases an HTML directory index links to."""
    parser = _Links()
    parser.feed(text)
    names = {unquote(h.rsplit("/", 1)[-1]): urljoin(base_url, h) for h in parser.hrefs}
    releases = []
    for name, url in names.items():
        m = _TARBALL.match(name)
        v = parse_version(m["version"]) if m else None
        if v is None:
            continue
        checksum = next((names[c] for c in _checksum_names(v) if c in names), None)
        releases.append(Release(v, url, checksum))
    return releases


def parse_github(text: str, source: str) -> list[Release]:
    """The releases of a GitHub (or Gitea/Forgejo) releases API answer."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"feed {source}: not JSON ({exc.msg}); is the feed kind right?") from None
    if not isinstance(data, list):
        raise UsageError(f"feed {source}: expected a JSON list of releases")
    releases = []
    for item in data:
        if not isinstance(item, dict) or item.get("draft"):
            continue
        v = parse_version(str(item.get("tag_name", "")))
        if v is None:
            continue
        assets = {
            str(a.get("name")): str(a.get("browser_download_url"))
            for a in item.get("assets") or []
            if isinstance(a, dict)
        }
        tarball = assets.get(v.tarball)
        if tarball is None:
            continue  # a tag without the release tarball cannot be built
        checksum = next((assets[c] for c in _checksum_names(v) if c in assets), None)
        releases.append(Release(v, tarball, checksum))
    return releases


def parse_feed(kind: str, text: str, url: str) -> list[Release]:
    if kind == "directory":
        return parse_directory(text, url)
    if kind == "github":
        return parse_github(text, url)
    raise UsageError(f"feed kind {kind!r} is not one of {', '.join(FEED_KINDS)}")


def parse_checksum(text: str, tarball: str, source: str) -> str:
    """The SHA-256 of ``tarball`` in a checksum file (``sha256sum`` output:
    ``<hex>  <name>`` lines, or a bare hex digest)."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or not _SHA256.match(fields[0]):
            continue
        if len(fields) == 1 or fields[1].lstrip("*").rsplit("/", 1)[-1] == tarball:
            return fields[0].lower()
    raise UsageError(f"checksum file {source} has no SHA-256 for {tarball}")
