"""Login rate limiting: a bounded number of failures per user name and per client."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable


class LoginLimiter:
    """At most ``max_failures`` failed logins per user name, and
    ``max_client_failures`` per client address, within ``window`` seconds.

    The console's form and the registry's ``/token`` both pass two keys, the
    user name (``user:NAME``, across every address) and the client address
    (``client:ADDR``), so many clients cannot guess one name quickly and one
    client cannot guess many names quickly (the address gets a larger
    allowance: several people may share one address). Memory is bounded: at most
    ``max_keys`` keys, the least recently failed forgotten first. In memory,
    per process: a restart forgets, which only gives an attacker one more window.
    """

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
        max_client_failures: int | None = None,
    ) -> None:
        self.max_failures = max_failures
        self.max_client_failures = max_client_failures or 4 * max_failures
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def _limit(self, key: str) -> int:
        return self.max_client_failures if key.startswith("client:") else self.max_failures

    def retry_after(self, *keys: str) -> float:
        """Seconds until a login may be tried again for these keys (0: allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                limit = self._limit(key)
                if len(q) >= limit:
                    wait = max(wait, q[-limit] + self.window - now)
        return max(0.0, wait)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                q = self._failures.pop(key, None) or deque(maxlen=self._limit(key))
                q.append(now)
                self._failures[key] = q  # most recently failed last
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
