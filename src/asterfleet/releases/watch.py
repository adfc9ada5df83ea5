"""The watcher daemon: a check every interval, with Prometheus metrics.

Metrics: ``asterfleet_releases_checks_total``,
``asterfleet_releases_new_total`` (proposals and pushes),
``asterfleet_releases_errors_total`` and
``asterfleet_releases_last_success_timestamp_seconds``.
"""

from __future__ import annotations

import threading
import time

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from asterfleet import logs
from asterfleet.errors import AsterfleetError
from asterfleet.releases.check import check_once
from asterfleet.releases.config import Config


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.checks = Counter(
            "asterfleet_releases_checks", "Release checks run.", registry=registry
        )
        self.new = Counter(
            "asterfleet_releases_new", "New releases proposed or pushed.", registry=registry
        )
        self.errors = Counter(
            "asterfleet_releases_errors", "Branch checks that failed.", registry=registry
        )
        self.last_success = Gauge(
            "asterfleet_releases_last_success_timestamp_seconds",
            "When a check last ended without an error (Unix time).",
            registry=registry,
        )


def watch(
    config: Config,
    metrics: Metrics,
    interval: float,
    stop: threading.Event,
    max_checks: int | None = None,
) -> int:
    """Check until ``stop`` is set (or ``max_checks`` were run); checks run."""
    done = 0
    with httpx.Client(timeout=30.0, follow_redirects=True) as client:
        while not stop.is_set() and (max_checks is None or done < max_checks):
            try:
                results = check_once(config, client)
            except AsterfleetError as exc:  # the state file itself: log, keep going
                logs.get("asterfleet.releases").error("release_check_failed", error=str(exc))
                metrics.errors.inc()
            except Exception:  # a daemon logs what nobody foresaw and keeps checking
                logs.get("asterfleet.releases").exception("release_check_crashed")
                metrics.errors.inc()
            else:
                errors = sum(r.outcome == "error" for r in results)
                metrics.errors.inc(errors)
                metrics.new.inc(sum(r.outcome in ("proposed", "pushed") for r in results))
                if not errors:
                    metrics.last_success.set(time.time())
            metrics.checks.inc()
            done += 1
            stop.wait(interval)
    return done
