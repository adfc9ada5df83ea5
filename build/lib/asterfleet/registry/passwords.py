"""Password hashing (argon2id) with a short-lived memory of recent successes.

Registry clients (skopeo, buildah, docker) send the password with every
token request; argon2 is deliberately slow, so a successful verification is
remembered for ``ttl`` seconds under a keyed hash of (username, password,
stored hash): a changed password or hash never matches an old entry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


class PasswordVerifier:
    def __init__(self, ttl: float = 60.0, size: int = 4096) -> None:
        self.ttl = ttl
        self.size = size
        self._key = secrets.token_bytes(32)
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def _fingerprint(self, username: str, password: str, stored: str) -> bytes:
        msg = b"\0".join(p.encode() for p in (username, password, stored))
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def verify(self, username: str, password: str, stored: str) -> bool:
        fp = self._fingerprint(username, password, stored)
        now = time.monotonic()
        with self._lock:
            until = self._seen.get(fp)
            if until is not None and until > now:
                return True
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
        with self._lock:
            self._seen[fp] = now + self.ttl
            self._seen.move_to_end(fp)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
        return True
