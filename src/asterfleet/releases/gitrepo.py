"""The image repository: a temporary worktree of the configured clone, one
commit, one push. The clone's own checkout is never touched."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from asterfleet.errors import AsterfleetError, MissingBinary


class GitError(AsterfleetError):
    """A git command failed."""


def git(repo: Path, *args: str) -> str:
    if shutil.which("git") is None:
        raise MissingBinary("git", "git")
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)} in {repo}: no answer in 300 s") from None
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)} in {repo}: {done.stderr.strip()[:400]}")
    return done.stdout


def read_file(repo: Path, remote: str, base: str, path: str) -> str:
    """``path`` as it is on ``remote/base`` (fetched now)."""
    git(repo, "fetch", "--quiet", remote, base)
    return git(repo, "show", f"FETCH_HEAD:{path}")


def commit_and_push(
    repo: Path,
    *,
    remote: str,
    base: str,
    target: str,
    path: str,
    edit: Callable[[str], str],
    message: str,
) -> str:
    """Start from ``remote/base``, rewrite ``path`` with ``edit``, commit
    with ``message`` and push to ``target``; the new commit's id."""
    git(repo, "fetch", "--quiet", remote, base)
    with tempfile.TemporaryDirectory(prefix="asterfleet-releases-") as tmp:
        work = Path(tmp) / "work"
        git(repo, "worktree", "add", "--quiet", "--detach", str(work), "FETCH_HEAD")
        try:
            file = work / path
            file.write_text(edit(file.read_text()))
            git(work, "add", path)
            git(
                work,
                "-c",
                "user.name=asterfleet releases",
                "-c",
                "user.email=releases@asterfleet.invalid",
                "commit",
                "--quiet",
                "-m",
                message,
            )
            commit = git(work, "rev-parse", "HEAD").strip()
            # A proposal branch is ours alone: a rerun after a crash may replace it.
            force = ["--force"] if target != base else []
            git(work, "push", "--quiet", *force, remote, f"HEAD:refs/heads/{target}")
        finally:
            git(repo, "worktree", "remove", "--force", str(work))
    return commit
