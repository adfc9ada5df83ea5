"""Where an Asterisk release's tarball is downloaded from (pure).

Standard releases live in ``asterisk/releases/``, certified ones
(``certified-20.7-cert5``) in ``certified-asterisk/releases/``: the
Asterisk image's build (images/asterisk/Containerfile) asks this module,
so the image and the release watcher agree on names and places.

    python -m asterfleet.asterisk.release 22.10.1
"""

from __future__ import annotations

import sys

from asterfleet.releases.feed import OFFICIAL_CERTIFIED_URL, OFFICIAL_URL
from asterfleet.releases.version import version


def tarball_url(text: str) -> str:
    """The official download URL of release ``text`` (UsageError if it is not one)."""
    v = version(text, "ASTERISK_VERSION")
    base = OFFICIAL_CERTIFIED_URL if v.certified else OFFICIAL_URL
    return base + v.tarball


def main(argv: list[str]) -> int:
    from asterfleet.errors import UsageError

    if len(argv) != 1:
        print("usage: python -m asterfleet.asterisk.release VERSION", file=sys.stderr)
        return 2
    try:
        print(tarball_url(argv[0]))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
