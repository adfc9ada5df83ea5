"""Logging in with a name and a password or API token: one path for the
console's form and the registry's ``/token``.

- One :class:`~asterfleet.auth.ratelimit.LoginLimiter` per process, keyed on
  the user name (across addresses) and on the client address.
- At most ``max_verifications`` argon2 checks run at once (each takes
  ~64 MiB and tens of milliseconds); further logins wait for a slot.
- A user name that does not exist costs no argon2 check: the login waits as
  long as a real check takes (a running average of measured checks), so the
  answer's timing does not tell whether the name exists. Only the very first
  unknown name, before any check was measured, runs one check to learn it.
- A password that verified is remembered for ``memo_seconds`` under a keyed
  hash of (name, password, stored hash): registry clients send it with every
  token request, and a changed password or hash never matches the memo.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import select

from asterfleet.auth.passwords import hash_password, needs_rehash, verify_password
from asterfleet.auth.principal import Principal, password_principal
from asterfleet.auth.ratelimit import LoginLimiter
from asterfleet.auth.tokens import is_token, verify_token
from asterfleet.db import Database, User

_PROBE_PASSWORD = "asterfleet-timing-probe"


class TooManyAttempts(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after:.0f} s")
        self.retry_after = retry_after


class Authenticator:
    def __init__(
        self,
        db: Database,
        limiter: LoginLimiter | None = None,
        max_verifications: int = 4,
        memo_seconds: float = 60.0,
        memo_size: int = 4096,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = db
        self.limiter = limiter if limiter is not None else LoginLimiter()
        self.memo_seconds = memo_seconds
        self.memo_size = memo_size
        self.sleep = sleep
        self._slots = threading.BoundedSemaphore(max_verifications)
        self._key = secrets.token_bytes(32)
        self._memo: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self._verify_seconds: float | None = None
        self.verifications = 0  # argon2 checks run (for tests and metrics)

    # -- the one entry point -----------------------------------------------------

    def login(self, username: str, secret: str, address: str) -> Principal | None:
        """The principal for a password or API token; None when wrong.

        Raises :class:`TooManyAttempts` while the name or address is limited.
        """
        keys = (f"user:{username.strip().lower()}", f"client:{address}")
        wait = self.limiter.retry_after(*keys)
        if wait > 0:
            raise TooManyAttempts(wait)
        if is_token(secret):
            info = verify_token(self.db, secret)
            principal = info.principal() if info and info.username == username else None
        else:
            principal = self._password(username, secret)
        if principal is None:
            self.limiter.failed(*keys)
        else:
            self.limiter.succeeded(*keys)
        return principal

    # -- passwords ----------------------------------------------------------------

    def _password(self, username: str, password: str) -> Principal | None:
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                self._as_long_as_a_check()
                return None
            stored, role = user.password_hash, user.role
        fp = hmac.new(
            self._key, b"\0".join(p.encode() for p in (username, password, stored)), hashlib.sha256
        ).digest()
        now = time.monotonic()
        with self._lock:
            until = self._memo.get(fp)
        if until is None or until <= now:
            if not self._verify(stored, password):
                return None
            with self._lock:
                self._memo[fp] = now + self.memo_seconds
                self._memo.move_to_end(fp)
                while len(self._memo) > self.memo_size:
                    self._memo.popitem(last=False)
        with self.db.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is None:
                return None
            if needs_rehash(row.password_hash) and row.password_hash == stored:
                row.password_hash = hash_password(password)
            row.last_login_at = time.time()
        return password_principal(username, role)

    def _verify(self, stored: str, password: str) -> bool:
        with self._slots:
            started = time.perf_counter()
            ok = verify_password(stored, password)
            took = time.perf_counter() - started
        with self._lock:
            self.verifications += 1
            prev = self._verify_seconds
            self._verify_seconds = took if prev is None else 0.8 * prev + 0.2 * took
        return ok

    def _as_long_as_a_check(self) -> None:
        if self._verify_seconds is None:
            self._verify(hash_password(_PROBE_PASSWORD), _PROBE_PASSWORD + "!")
            return
        self.sleep(self._verify_seconds)
