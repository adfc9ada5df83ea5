"""The watcher daemon: a check every interval, with Prometheus metrics, and
(when configured) its IRC channel.

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
from asterfleet.releases import chatops
from asterfleet.releases.check import BranchResult, check_once, describe
from asterfleet.releases.config import Config
from asterfleet.releases.ircbot import IrcBot
from asterfleet.releases.irccommands import interpret


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


class Watcher:
    """Checks, one at a time (the loop's and the channel's), and what the
    last one found."""

    def __init__(self, config: Config, metrics: Metrics, client: httpx.Client) -> None:
        self.config = config
        self.metrics = metrics
        self.client = client
        self.lock = threading.Lock()
        self.last: list[BranchResult] = []
        self.last_at: float | None = None
        self.bot: IrcBot | None = None

    def check(self) -> list[BranchResult]:
        with self.lock:
            try:
                results = check_once(self.config, self.client, announce=self._announce)
            except AsterfleetError as exc:  # the state file itself: log, keep going
                logs.get("asterfleet.releases").error("release_check_failed", error=str(exc))
                self.metrics.errors.inc()
                results = []
            except Exception:  # a daemon logs what nobody foresaw and keeps checking
                logs.get("asterfleet.releases").exception("release_check_crashed")
                self.metrics.errors.inc()
                results = []
            else:
                errors = sum(r.outcome == "error" for r in results)
                self.metrics.errors.inc(errors)
                self.metrics.new.inc(sum(r.outcome in ("proposed", "pushed") for r in results))
                if not errors:
                    self.metrics.last_success.set(time.time())
                self.last, self.last_at = results, time.time()
            self.metrics.checks.inc()
            return results

    def _announce(self, text: str) -> None:
        if self.bot is not None:
            self.bot.say(text)

    def status(self) -> str:
        if self.last_at is None:
            return "no check has finished yet"
        ago = time.time() - self.last_at
        parts = [
            f"{r.branch}: {r.outcome} {r.newest or ''}".strip() + (f" {r.url}" if r.url else "")
            for r in self.last
        ]
        return f"last check {ago:.0f} s ago: " + "; ".join(parts)

    def summary(self) -> str:
        results = self.check()
        return "; ".join(describe(r) for r in results) or "the check failed; see the log"

    def on_line(self, nick: str, text: str) -> str | None:
        irc = self.config.irc
        assert irc is not None
        allowed = frozenset(n.lower() for n in irc.allow)
        branches = tuple(b.name for b in self.config.branches)
        request = interpret(text, nick, allowed, branches)
        if request is None or isinstance(request, str):
            return request
        logs.get("asterfleet.releases").info("irc_command", nick=nick, text=text)
        return chatops.carry_out(irc, request, nick, self.status, self.summary)


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
        watcher = Watcher(config, metrics, client)
        if config.irc is not None:
            watcher.bot = IrcBot(config.irc, watcher.on_line, stop)
            watcher.bot.start()
        while not stop.is_set() and (max_checks is None or done < max_checks):
            watcher.check()
            done += 1
            stop.wait(interval)
        if watcher.bot is not None:
            watcher.bot.thread.join(timeout=5)
    return done
