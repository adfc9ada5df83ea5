"""The registry's Prometheus counters, in one place for the token endpoint
and the notification hook."""

from __future__ import annotations

from prometheus_client import Counter

TOKENS_ISSUED = Counter(
    "asterfleet_registry_tokens_issued_total", "Registry bearer tokens issued", ["grant"]
)
LOGIN_FAILURES = Counter(
    "asterfleet_registry_login_failures_total", "Failed registry logins", ["reason"]
)
NOTIFICATIONS = Counter(
    "asterfleet_registry_notifications_total", "Registry notification envelopes", ["result"]
)
