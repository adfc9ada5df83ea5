"""Reading the release feeds and checksum files (samples in tests/fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.errors import UsageError
from asterfleet.releases.feed import parse_checksum, parse_directory, parse_feed, parse_github
from asterfleet.releases.version import newest

FIXTURES = Path(__file__).parent.parent / "fixtures" / "releases"
BASE = "https://downloads.example/pub/telephony/asterisk/releases/"


def test_official_listing() -> None:
    releases = parse_directory((FIXTURES / "asterisk-releases.html").read_text(), BASE)
    by = {str(r.version): r for r in releases}
    # The -current aliases, the sidecar files and the four-part 1.8.x are not
    # releases of a branch we track.
    assert sorted(by) == sorted(["20.8.1", "20.9.0", "20.10.0-rc1", "22.4.0", "22.10.0", "22.9.3"])
    assert by["22.10.0"].tarball_url == BASE + "asterisk-22.10.0.tar.gz"
    assert by["22.10.0"].checksum_url == BASE + "asterisk-22.10.0.sha256"
    assert by["22.9.3"].checksum_url is None  # none published beside it
    versions = [r.version for r in releases]
    assert str(newest(versions, "22")) == "22.10.0"
    assert str(newest(versions, "20")) == "20.9.0"
    assert str(newest(versions, "20", prereleases=True)) == "20.10.0-rc1"


def test_certified_listing_in_pre_format() -> None:
    base = "https://downloads.example/pub/telephony/certified-asterisk/releases/"
    releases = parse_feed("directory", (FIXTURES / "certified-releases.html").read_text(), base)
    best = newest([r.version for r in releases], "certified-20.7")
    assert str(best) == "certified-20.7-cert10"
    r = next(r for r in releases if r.version == best)
    assert r.tarball_url == base + "asterisk-certified-20.7-cert10.tar.gz"
    assert r.checksum_url == base + "asterisk-certified-20.7-cert10.sha256"


def test_github_releases() -> None:
    releases = parse_github((FIXTURES / "github-releases.json").read_text(), "gh")
    by = {str(r.version): r for r in releases}
    # The draft and the release without a tarball asset are left out.
    assert sorted(by) == ["22.10.1", "22.11.0-rc1", "certified-20.7-cert10"]
    assert by["22.10.1"].checksum_url is not None
    assert by["22.10.1"].checksum_url.endswith("/22.10.1/asterisk-22.10.1.sha256")
    assert str(newest(list(r.version for r in releases), "22")) == "22.10.1"


@pytest.mark.parametrize(
    ("text", "kind"),
    [("<html>", "github"), ('{"a": 1}', "github"), ("x", "rss")],
)
def test_bad_feeds(text: str, kind: str) -> None:
    with pytest.raises(UsageError):
        parse_feed(kind, text, "https://feed.example/")


DIGEST = "ab" * 32


@pytest.mark.parametrize(
    "text",
    [
        f"{DIGEST}  asterisk-22.10.0.tar.gz\n",
        f"{DIGEST} *asterisk-22.10.0.tar.gz\n",
        f"{'cd' * 32}  asterisk-22.9.0.tar.gz\n{DIGEST}  asterisk-22.10.0.tar.gz\n",
        f"{DIGEST.upper()}\n",
        f"{DIGEST}  releases/asterisk-22.10.0.tar.gz",
    ],
)
def test_checksum_files(text: str) -> None:
    assert parse_checksum(text, "asterisk-22.10.0.tar.gz", "sums") == DIGEST


@pytest.mark.parametrize(
    "text",
    ["", "not a digest\n", f"{DIGEST}  asterisk-22.9.0.tar.gz\n", "abc  asterisk-22.10.0.tar.gz"],
)
def test_checksum_file_without_our_tarball(text: str) -> None:
    with pytest.raises(UsageError, match=r"has no SHA-256 for asterisk-22\.10\.0\.tar\.gz"):
        parse_checksum(text, "asterisk-22.10.0.tar.gz", "sums")
