"""Opaque secrets (personal access tokens, refresh tokens): high-entropy
random strings shown once and stored as SHA-256 (argon2 is for passwords,
which are guessable; these are not)."""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets

PAT_PREFIX = "afp_"
REFRESH_PREFIX = "afr_"


def new_secret(prefix: str) -> str:
    return prefix + _secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
