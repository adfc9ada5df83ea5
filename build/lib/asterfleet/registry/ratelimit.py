"""Failed-login limiting per (username, client address), pure and clocked."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoginLimiter:
    """After ``limit`` failures within ``window`` seconds, the (user, IP)
    pair is refused until the oldest failure leaves the window."""

    limit: int = 5
    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if now - t < self.window]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until a login may be tried again; 0 when allowed now."""
        now = self.clock()
        with self._lock:
            times = self._recent((username, address), now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, self.window - (now - times[-self.limit]))

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            times = self._recent((username, address), now)
            times.append(now)
            self._failures[(username, address)] = times[-self.limit :]

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((username, address), None)
