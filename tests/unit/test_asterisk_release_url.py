"""The Asterisk image downloads each release from where it is published:
certified releases from certified-asterisk/releases/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asterfleet.asterisk.release import tarball_url
from asterfleet.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
BASE = "https://downloads.asterisk.org/pub/telephony/"


@pytest.mark.parametrize(
    ("version", "url"),
    [
        ("22.10.1", "asterisk/releases/asterisk-22.10.1.tar.gz"),
        ("20.16.0-rc1", "asterisk/releases/asterisk-20.16.0-rc1.tar.gz"),
        (
            "certified-20.7-cert5",
            "certified-asterisk/releases/asterisk-certified-20.7-cert5.tar.gz",
        ),
        # The old spelling of certified tags names the same tarball.
        (
            "certified/18.9-cert5",
            "certified-asterisk/releases/asterisk-certified-18.9-cert5.tar.gz",
        ),
    ],
)
def test_tarball_url(version: str, url: str) -> None:
    assert tarball_url(version) == BASE + url


@pytest.mark.parametrize("bad", ["22", "22.10", "20.7-cert5", "latest"])
def test_a_bad_version_is_named(bad: str) -> None:
    with pytest.raises(UsageError, match="ASTERISK_VERSION"):
        tarball_url(bad)


def test_the_containerfile_asks_for_the_url_and_the_command_answers() -> None:
    text = (REPO / "images/asterisk/Containerfile").read_text()
    assert 'python -m asterfleet.asterisk.release "$ASTERISK_VERSION"' in text
    assert "asterisk/releases/$tarball" not in text  # no hard-coded directory
    done = subprocess.run(
        [sys.executable, "-m", "asterfleet.asterisk.release", "certified-20.7-cert5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == BASE + (
        "certified-asterisk/releases/asterisk-certified-20.7-cert5.tar.gz"
    )
    bad = subprocess.run(
        [sys.executable, "-m", "asterfleet.asterisk.release", "22"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "ASTERISK_VERSION '22'" in bad.stderr
