"""One check of every tracked branch: read the feed, compare with the
Containerfile on the image repository, propose what is new.

A version is proposed once: the state file remembers it, and before opening
a request the forge is asked for an open one from the same branch (a crash
between the push and the record is then harmless).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import httpx

from asterfleet import logs
from asterfleet.errors import AsterfleetError, UsageError
from asterfleet.releases import containerfile, forge, gitrepo
from asterfleet.releases.config import Branch, Config
from asterfleet.releases.feed import Release, parse_checksum, parse_feed
from asterfleet.releases.fetch import Fetched, fetch_feed, fetch_text
from asterfleet.releases.notify import post_webhook
from asterfleet.releases.state import Proposal, State, load_state, save_state
from asterfleet.releases.version import AsteriskVersion, newest, parse_version

Outcome = Literal["up-to-date", "no-release", "proposed", "pushed", "already-proposed", "error"]


@dataclass
class BranchResult:
    branch: str
    outcome: Outcome
    feed: str  # not-modified, unchanged, changed ("" when it failed)
    newest: str | None = None
    current: str | None = None
    url: str | None = None
    git_branch: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def proposal_branch(v: AsteriskVersion) -> str:
    return f"asterisk/{v}"


def commit_message(v: AsteriskVersion, sha256: str, release: Release) -> str:
    return (
        f"Asterisk {v}: update the image to the new release\n\n"
        f"ASTERISK_VERSION={v}\nASTERISK_SHA256={sha256}\n"
        f"Tarball: {release.tarball_url}\nChecksum: {release.checksum_url}\n\n"
        "Proposed by 'asterfleet releases'."
    )


def _one(
    config: Config,
    b: Branch,
    fetched: Fetched,
    state: State,
    client: httpx.Client,
) -> BranchResult:
    result = BranchResult(b.name, "no-release", fetched.freshness)
    releases = parse_feed(b.feed_kind, fetched.body, b.url())
    best = newest([r.version for r in releases], b.name, prereleases=b.prereleases)
    if best is None:
        return result
    release = next(r for r in releases if r.version == best)
    result.newest = str(best)
    repo = config.repository
    base = config.base_of(b)
    path = config.containerfile_of(b)
    text = gitrepo.read_file(repo.path, repo.remote, base, path)
    current_text = containerfile.read_arg(text, containerfile.VERSION_ARG)
    result.current = current_text
    current = parse_version(current_text) if current_text else None
    if current is not None and best <= current:
        result.outcome = "up-to-date"
        return result
    known = state.proposals.get(str(best))
    if known is not None:
        result.outcome, result.url, result.git_branch = (
            "already-proposed",
            known.url,
            known.git_branch,
        )
        return result
    head = proposal_branch(best) if b.mode == "pull-request" else base
    result.git_branch = head
    token = ""
    if b.mode == "pull-request":
        assert config.forge is not None  # checked when the config was read
        token = config.forge.token()
        url = forge.find_open(client, config.forge, token, head)
        if url is not None:
            state.proposals[str(best)] = Proposal(
                version=str(best), branch=b.name, git_branch=head, url=url, mode=b.mode
            )
            result.outcome, result.url = "already-proposed", url
            return result
    if release.checksum_url is None:
        raise UsageError(
            f"feed {b.url()} publishes no SHA-256 file for {best.tarball}; "
            "the image cannot be pinned without one"
        )
    sha256 = parse_checksum(
        fetch_text(client, release.checksum_url, "checksum file"),
        best.tarball,
        release.checksum_url,
    )
    values = {containerfile.VERSION_ARG: str(best), containerfile.SHA256_ARG: sha256}
    gitrepo.commit_and_push(
        repo.path,
        remote=repo.remote,
        base=base,
        target=head,
        path=path,
        edit=lambda t: containerfile.set_args(t, values, path),
        message=commit_message(best, sha256, release),
    )
    if b.mode == "pull-request":
        assert config.forge is not None
        result.url = forge.open_request(
            client,
            config.forge,
            token,
            head=head,
            base=base,
            title=f"Asterisk {best}",
            body=(
                f"Asterisk {best} was released ({release.tarball_url}).\n\n"
                f"This sets `ASTERISK_VERSION={best}` and `ASTERISK_SHA256={sha256}` "
                f"in `{path}` (was {current_text or 'unset'})."
            ),
        )
        result.outcome = "proposed"
    else:
        result.outcome = "pushed"
    state.proposals[str(best)] = Proposal(
        version=str(best), branch=b.name, git_branch=head, url=result.url, mode=b.mode
    )
    return result


def describe(r: BranchResult) -> str:
    if r.outcome == "proposed":
        return f"Asterisk {r.newest} (branch {r.branch}) is out: pull request {r.url}"
    if r.outcome == "pushed":
        return f"Asterisk {r.newest} (branch {r.branch}) is out: pushed to {r.git_branch}"
    if r.outcome == "error":
        return f"release check of branch {r.branch} failed: {r.error}"
    return f"branch {r.branch}: {r.outcome} ({r.newest or 'no release'})"


def check_once(
    config: Config, client: httpx.Client, announce: Callable[[str], None] | None = None
) -> list[BranchResult]:
    """Check every tracked branch once; the state file is saved as it goes.
    New releases and failures go to the webhook and to ``announce``."""
    state = load_state(config.state_file)
    fetched: dict[str, Fetched] = {}
    results: list[BranchResult] = []
    for b in config.branches:
        url = b.url()
        try:
            if url not in fetched:
                fetched[url] = fetch_feed(client, url, state.feeds.get(url))
                state.feeds[url] = fetched[url].cache
                save_state(config.state_file, state)
            result = _one(config, b, fetched[url], state, client)
        except AsterfleetError as exc:
            f = fetched.get(url)
            result = BranchResult(b.name, "error", f.freshness if f else "", error=str(exc))
        save_state(config.state_file, state)
        logs.get("asterfleet.releases").info("release_check", **result.as_dict())
        results.append(result)
        if result.outcome not in ("proposed", "pushed", "error"):
            continue
        if announce is not None:
            announce(describe(result))
        if config.notify.webhook_url:
            try:
                post_webhook(client, config.notify.webhook_url, describe(result))
            except AsterfleetError as exc:
                logs.get("asterfleet.releases").warning("notify_failed", error=str(exc))
    return results
