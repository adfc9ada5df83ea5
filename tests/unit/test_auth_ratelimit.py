"""Login rate limiting: failures per key within a window."""

from __future__ import annotations

from asterfleet.auth import LoginLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_five_failures_block_the_sixth_try_until_the_window_passes() -> None:
    clock = Clock()
    limiter = LoginLimiter(max_failures=5, window=60, clock=clock, max_client_failures=10)
    for _ in range(5):
        assert limiter.retry_after("client:a", "user:alice") == 0
        limiter.failed("client:a", "user:alice")
    assert limiter.retry_after("user:alice") == 60
    assert limiter.retry_after("client:b", "user:alice") == 60  # from any address
    # The address has a larger allowance (people share addresses)...
    assert limiter.retry_after("client:a", "user:bob") == 0
    for _ in range(5):
        limiter.failed("client:a", "user:bob")
    # ...until it has failed for too many names.
    assert limiter.retry_after("client:a", "user:carol") == 60
    clock.now += 30
    assert limiter.retry_after("user:alice") == 30
    clock.now += 30
    assert limiter.retry_after("client:a", "user:alice") == 0


def test_a_success_clears_the_failures() -> None:
    limiter = LoginLimiter(max_failures=2, window=60, clock=Clock())
    limiter.failed("user:alice")
    limiter.succeeded("user:alice")
    limiter.failed("user:alice")
    assert limiter.retry_after("user:alice") == 0


def test_memory_is_bounded() -> None:
    limiter = LoginLimiter(max_failures=1, window=60, clock=Clock(), max_keys=100)
    for i in range(1000):
        limiter.failed(f"client:{i}")
    assert len(limiter._failures) <= 100
