"""Login rate limiting: a bounded number of failures per client and per user name."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LoginLimiter:
    """At most ``max_failures`` failed logins per key within ``window`` seconds.

    Keys are the client address and the user name, so one client cannot
    guess many names quickly and many clients cannot guess one name quickly.
    In memory: a restart forgets, which only gives an attacker one more window.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def retry_after(self, *keys: str) -> float:
        """Seconds until a login may be tried again for these keys (0: allowed now)."""
        wait = 0.0
        for key in keys:
            q = self._recent(key)
            if len(q) >= self.max_failures:
                wait = max(wait, q[0] + self.window - self.clock())
        return max(0.0, wait)

    def failed(self, *keys: str) -> None:
        if len(self._failures) >= self.max_keys:
            # Bounded memory: forget the oldest keys first.
            for old in list(self._failures)[: self.max_keys // 10]:
                del self._failures[old]
        now = self.clock()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
