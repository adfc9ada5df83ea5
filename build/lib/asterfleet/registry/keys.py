"""The token signing key and its certificate.

Distribution 2.8 trusts the certificates in its ``rootcertbundle``; a token
carries the signer's chain in the JWT ``x5c`` header and a ``kid`` that is
the libtrust fingerprint of the public key (what 2.8 looks up when there is
no chain). The key is parsed once and cached by the caller.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from asterfleet.errors import UsageError

KEY_FILE = "token-signing.key"
CERT_FILE = "token-signing.crt"


def libtrust_kid(public_key: ec.EllipticCurvePublicKey) -> str:
    """libtrust's key ID: base32 of the first 240 bits of SHA-256 of the DER
    SubjectPublicKeyInfo, in 12 groups of 4 characters joined by ':'."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


@dataclass(frozen=True)
class SigningMaterial:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    kid: str
    x5c: tuple[str, ...]  # base64 DER, leaf first

    @property
    def algorithm(self) -> str:
        return "ES256"

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _material(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> SigningMaterial:
    der = cert.public_bytes(serialization.Encoding.DER)
    return SigningMaterial(
        key=key,
        certificate=cert,
        kid=libtrust_kid(key.public_key()),
        x5c=(base64.b64encode(der).decode(),),
    )


def generate(common_name: str = "asterfleet token signer", days: int = 3650) -> SigningMaterial:
    """A fresh P-256 key with a self-signed certificate (the root of trust)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return _material(key, cert)


def write(material: SigningMaterial, directory: Path) -> tuple[Path, Path]:
    """Write the key (0600) and certificate; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    pem = material.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    cert_path.write_bytes(material.certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def load(directory: Path) -> SigningMaterial:
    """The key and certificate written by :func:`write` (``registry config``)."""
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError as exc:
        raise UsageError(
            f"signing material {exc.filename} is missing: run "
            "'asterfleet registry config --out DIR' first"
        ) from exc
    except ValueError as exc:
        raise UsageError(f"signing key in {directory} does not parse: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{key_path}: expected an EC (P-256) private key")
    return _material(key, cert)
