"""The Distribution registry's ``config.yml`` and the token server settings.

``asterfleet registry config`` writes, into one directory: ``config.yml``,
the token signing key and certificate (the certificate is the registry's
``rootcertbundle``) and ``notify-secret``, the shared secret the registry
sends with its notifications to the catalogue hook.

Distribution's own metrics come from its debug listener (``http.debug``),
which also serves pprof and takes no login: it is off unless
``--debug-listen`` names an address, and ``:PORT`` means loopback. The token
server's metrics are its own ``/metrics`` (:mod:`asterfleet.registry.app`).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from asterfleet.errors import UsageError
from asterfleet.registry import keys
from asterfleet.secretfile import write_secret

CONFIG_FILE = "config.yml"
NOTIFY_SECRET_FILE = "notify-secret"
SETTINGS_FILE = "token-server.json"


@dataclass(frozen=True)
class RegistryConfig:
    realm: str  # the token endpoint URL clients are sent to
    service: str
    issuer: str
    rootcertbundle: Path
    storage_dir: Path
    listen: str = "127.0.0.1:5000"
    notify_url: str | None = None  # the catalogue hook
    notify_secret: str | None = None
    http_secret: str = ""
    log_level: str = "info"
    #: Distribution's debug listener (its /metrics and pprof, no login); None: off.
    debug_listen: str | None = None


def debug_address(value: str) -> str:
    """``HOST:PORT`` for the debug listener; ``:PORT`` is loopback (it has no login)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"--debug-listen {value!r}: expected HOST:PORT or :PORT (loopback), e.g. 127.0.0.1:5002"
        )
    return f"{host or '127.0.0.1'}:{port}"


def _q(value: str) -> str:
    # JSON strings are valid YAML double-quoted scalars.
    return json.dumps(value)


def render_config(cfg: RegistryConfig) -> str:
    """The registry's config.yml (pure; values quoted so nothing is mis-typed)."""
    for name, url in (("--realm", cfg.realm), ("--notify-url", cfg.notify_url)):
        if url is not None and urlparse(url).scheme not in ("http", "https"):
            raise UsageError(f"{name} {url!r}: expected an http:// or https:// URL")
    lines = [
        "version: 0.1",
        "log:",
        f"  level: {cfg.log_level}",
        "  formatter: text",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {_q(str(cfg.storage_dir))}",
        "  delete:",
        "    enabled: true",
        "  cache:",
        "    blobdescriptor: inmemory",
        "http:",
        f"  addr: {_q(cfg.listen)}",
        f"  secret: {_q(cfg.http_secret or secrets.token_hex(16))}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if cfg.debug_listen:
        lines += [
            "  debug:",
            f"    addr: {_q(debug_address(cfg.debug_listen))}",
            "    prometheus:",
            "      enabled: true",
            "      path: /metrics",
        ]
    lines += [
        "auth:",
        "  token:",
        f"    realm: {_q(cfg.realm)}",
        f"    service: {_q(cfg.service)}",
        f"    issuer: {_q(cfg.issuer)}",
        f"    rootcertbundle: {_q(str(cfg.rootcertbundle))}",
    ]
    if cfg.notify_url:
        lines += [
            "notifications:",
            "  events:",
            "    includereferences: true",
            "  endpoints:",
            "    - name: asterfleet-catalogue",
            f"      url: {_q(cfg.notify_url)}",
            "      headers:",
            f"        Authorization: [{_q('Bearer ' + (cfg.notify_secret or ''))}]",
            "      timeout: 2s",
            "      threshold: 5",
            "      backoff: 2s",
            "      ignoredmediatypes: [application/octet-stream]",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class TokenServerSettings:
    """What ``asterfleet registry serve`` reads back from the config directory."""

    directory: Path
    service: str
    issuer: str
    realm: str
    registry_url: str  # where the registry itself answers (for reconcile)
    notify_secret: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "service": self.service,
                "issuer": self.issuer,
                "realm": self.realm,
                "registry_url": self.registry_url,
            },
            indent=2,
        )


def write_config(
    out: Path,
    realm: str,
    service: str,
    issuer: str | None = None,
    listen: str = "127.0.0.1:5000",
    notify_url: str | None = None,
    storage_dir: Path | None = None,
    debug_listen: str | None = None,
) -> TokenServerSettings:
    """:func:`_write_config`; a directory that cannot be written is a UsageError."""
    try:
        return _write_config(
            out, realm, service, issuer, listen, notify_url, storage_dir, debug_listen
        )
    except OSError as exc:
        raise UsageError(
            f"--out {out}: cannot write there ({exc.strerror or exc}): choose a writable directory"
        ) from None


def _write_config(
    out: Path,
    realm: str,
    service: str,
    issuer: str | None,
    listen: str,
    notify_url: str | None,
    storage_dir: Path | None,
    debug_listen: str | None = None,
) -> TokenServerSettings:
    """Write config.yml, the signing key and certificate, and the notify secret.

    An existing key is kept (rotating it would invalidate live tokens); the
    notification secret likewise.
    """
    out.mkdir(parents=True, exist_ok=True)
    try:
        material = keys.load(out)
    except UsageError:
        material = keys.generate()
        keys.write(material, out)
    secret_path = out / NOTIFY_SECRET_FILE
    if secret_path.exists():
        notify_secret = secret_path.read_text().strip()
    else:
        notify_secret = secrets.token_urlsafe(32)
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(notify_secret + "\n")
    if notify_url is None:
        parsed = urlparse(realm)
        notify_url = f"{parsed.scheme}://{parsed.netloc}/hooks/registry"
    cfg = RegistryConfig(
        realm=realm,
        service=service,
        issuer=issuer or service,
        rootcertbundle=(out / keys.CERT_FILE).resolve(),
        storage_dir=(storage_dir or out / "storage").resolve(),
        listen=listen,
        notify_url=notify_url,
        notify_secret=notify_secret,
        debug_listen=debug_listen,
    )
    write_secret(out / CONFIG_FILE, render_config(cfg), what="--out")  # holds the notify secret
    settings = TokenServerSettings(
        directory=out,
        service=service,
        issuer=cfg.issuer,
        realm=realm,
        registry_url=f"http://{listen}",
        notify_secret=notify_secret,
    )
    (out / SETTINGS_FILE).write_text(settings.to_json() + "\n")
    return settings


def read_settings(directory: Path) -> TokenServerSettings:
    try:
        data = json.loads((directory / SETTINGS_FILE).read_text())
        secret = (directory / NOTIFY_SECRET_FILE).read_text().strip()
    except FileNotFoundError as exc:
        raise UsageError(
            f"{exc.filename} is missing: run 'asterfleet registry config --out {directory}' first"
        ) from exc
    return TokenServerSettings(
        directory=directory,
        service=data["service"],
        issuer=data["issuer"],
        realm=data["realm"],
        registry_url=data["registry_url"],
        notify_secret=secret,
    )
