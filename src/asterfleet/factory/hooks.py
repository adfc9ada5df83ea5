"""After a build: the knot's continuous-deployment hooks (a webhook and/or
a command, on success) and the result notification (every finished build)."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import structlog

from asterfleet.factory.builder import step_environment
from asterfleet.factory.knot import Knot
from asterfleet.factory.queue import Build

log = structlog.get_logger("asterfleet.factory.hooks")


def payload(knot: Knot, build: Build, image: str | None, digest: str | None) -> dict[str, Any]:
    return {
        "knot": knot.name,
        "build": build.number,
        "ref": build.ref,
        "sha": build.sha,
        "state": build.state,
        "reason": build.reason,
        "image": image,
        "digest": digest,
        "tags": list(build.tags),
        "repository": knot.repository,
    }


def hook_env(body: dict[str, Any]) -> dict[str, str]:
    """What the command hook sees: values in the environment, never spliced
    into the command line (no quoting bugs, no injection)."""
    return {
        "ASTERFLEET_KNOT": str(body["knot"]),
        "ASTERFLEET_BUILD": str(body["build"]),
        "ASTERFLEET_REF": str(body["ref"]),
        "ASTERFLEET_SHA": str(body["sha"] or ""),
        "ASTERFLEET_IMAGE": str(body["image"] or ""),
        "ASTERFLEET_DIGEST": str(body["digest"] or ""),
        "ASTERFLEET_TAGS": " ".join(body["tags"]),
    }


def post(url: str, body: dict[str, Any], timeout: float = 10.0) -> bool:
    try:
        resp = httpx.post(url, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        log.warning("hook_webhook_failed", url=url, error=str(exc))
        return False
    if not resp.is_success:
        log.warning("hook_webhook_failed", url=url, status=resp.status_code)
    return resp.is_success


def run_command(command: str, body: dict[str, Any], timeout: float = 600.0) -> tuple[int, str]:
    env = step_environment(hook_env(body))
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return 124, f"hook command timed out after {timeout:.0f}s"
    return proc.returncode, (proc.stdout + proc.stderr)[-4000:]
