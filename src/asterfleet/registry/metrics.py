"""The registry's Prometheus counters, in one place for the token endpoint
and the notification hook.

With ``registry serve --workers N`` they count in N processes through
prometheus_client's multiprocess mode (:mod:`asterfleet.tokenserver`): each
is the sum over every worker this server has run, dead ones included.
"""

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
