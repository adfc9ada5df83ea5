"""Registry bearer tokens (JWT, per the Distribution token spec) and the
refresh tokens behind ``offline_token`` / OAuth2 ``refresh_token`` grants."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from sqlalchemy import Engine, insert, select, update

from asterfleet.factory.db import as_utc, utcnow
from asterfleet.factory.schema import reg_refresh_tokens
from asterfleet.registry.keys import SigningMaterial
from asterfleet.registry.scope import Scope
from asterfleet.registry.secrets import REFRESH_PREFIX, hash_secret, new_secret


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@dataclass(frozen=True)
class Issuer:
    material: SigningMaterial
    issuer: str
    service: str
    ttl: int = 300

    def claims(self, subject: str, access: Sequence[Scope], now: dt.datetime) -> dict[str, Any]:
        ts = int(now.timestamp())
        return {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": ts + self.ttl,
            "nbf": ts - 1,
            "iat": ts,
            "jti": secrets.token_hex(16),
            "access": [
                {"type": s.type, "name": s.name, "actions": list(s.actions)} for s in access
            ],
        }

    @functools.cached_property
    def _header_segment(self) -> bytes:
        """The JOSE header (with the certificate chain) never changes: encode it once."""
        header = {
            "alg": self.material.algorithm,
            "kid": self.material.kid,
            "typ": "JWT",
            "x5c": list(self.material.x5c),
        }
        return _b64(json.dumps(header, separators=(",", ":")).encode())

    def issue(self, subject: str, access: Sequence[Scope], now: dt.datetime | None = None) -> str:
        claims = self.claims(subject, access, now or utcnow())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = self._header_segment + b"." + payload
        der = self.material.key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        # JWS ES256 wants the raw 64-byte r || s, not DER.
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return (signing_input + b"." + _b64(signature)).decode()

    def decode(self, token: str) -> dict[str, Any]:
        """Verify a token this issuer signed (tests and diagnostics)."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self.material.key.public_key(),
            algorithms=[self.material.algorithm],
            audience=self.service,
            issuer=self.issuer,
        )
        return claims


class RefreshTokens:
    """Long-lived secrets that stand for a user's login (offline tokens)."""

    def __init__(self, engine: Engine, lifetime: dt.timedelta = dt.timedelta(days=30)) -> None:
        self.engine = engine
        self.lifetime = lifetime

    def create(self, username: str, service: str) -> str:
        secret = new_secret(REFRESH_PREFIX)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                insert(reg_refresh_tokens).values(
                    secret_hash=hash_secret(secret),
                    username=username,
                    service=service,
                    created_at=now,
                    expires_at=now + self.lifetime,
                )
            )
        return secret

    def username_for(self, secret: str, service: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(reg_refresh_tokens).where(
                    reg_refresh_tokens.c.secret_hash == hash_secret(secret)
                )
            ).first()
        if row is None or row.revoked_at is not None or row.service != service:
            return None
        expires = as_utc(row.expires_at)
        if expires is None or expires <= utcnow():
            return None
        return str(row.username)

    def revoke_all(self, username: str) -> int:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(reg_refresh_tokens)
                .where(
                    reg_refresh_tokens.c.username == username,
                    reg_refresh_tokens.c.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        return done.rowcount
