"""The watcher's TOML configuration: defaults, and one clear line on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from asterfleet.errors import UsageError
from asterfleet.releases.config import parse_config
from asterfleet.releases.feed import GITHUB_URL, OFFICIAL_CERTIFIED_URL, OFFICIAL_URL

GOOD = """
state_file = "state.json"
[repository]
path = "image-repo"
[forge]
kind = "gitea"
api_url = "http://127.0.0.1:3000/api/v1/"
project = "ops/asterisk-image"
token_env = "T"
[notify]
webhook_url = "http://127.0.0.1:9/hook"
[[branch]]
name = "22"
[[branch]]
name = "certified-20.7"
mode = "push"
base = "certified"
[[branch]]
name = "20"
feed_kind = "github"
"""


def test_defaults_and_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    c = parse_config(GOOD, "/etc/af/releases.toml")
    assert c.state_file == Path("/etc/af/state.json")
    assert c.repository.path == Path("/etc/af/image-repo")
    assert [b.url() for b in c.branches] == [OFFICIAL_URL, OFFICIAL_CERTIFIED_URL, GITHUB_URL]
    assert [c.base_of(b) for b in c.branches] == ["main", "certified", "main"]
    assert c.containerfile_of(c.branches[0]) == "images/asterisk/Containerfile"
    assert c.forge is not None and c.forge.api() == "http://127.0.0.1:3000/api/v1"
    monkeypatch.setenv("T", " s3cret\n")
    assert c.forge.token() == "s3cret"
    monkeypatch.setenv("T", "")
    with pytest.raises(UsageError, match="token is empty"):
        c.forge.token()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("state_file = [", "not TOML"),
        (
            GOOD.replace('name = "22"', 'name = "22.1"'),
            r"branch\.0\.name: .*not an Asterisk branch",
        ),
        (GOOD.replace('mode = "push"', 'mode = "yolo"'), r"branch\.1\.mode"),
        (GOOD.replace('kind = "gitea"', 'kind = "svn"'), r"forge\.kind"),
        (GOOD.replace('name = "20"', 'name = "22"'), "a branch is listed twice"),
        (GOOD.split("[forge]")[0] + '[[branch]]\nname = "22"\n', "need a \\[forge\\] section"),
        (GOOD.replace("[notify]", "[notify]\ncolour = 1"), r"notify\.colour"),
        ('state_file = "s"\n[repository]\npath = "r"\n', "branch: Field required"),
        (GOOD + '[irc]\nserver = "irc.example.net"\n', r"irc\.server: .*is not HOST:PORT"),
        (GOOD + '[irc]\nserver = "h:6667"\nallow = "alice"\n', r"irc\.allow"),
    ],
)
def test_bad_configs(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=f"config r.toml: .*{message}"):
        parse_config(text, "r.toml")
