"""Secrets at rest: values sealed with a key kept in a file (0600) outside
the database, so a copy or a dump of the database holds no usable secret.

A sealed value is text, ``sealed:v1:`` followed by a Fernet token
(AES-128-CBC with an HMAC-SHA256, from ``cryptography``): it fits where the
clear value was (a JSON string), and :func:`Key.open` tells a sealed value
from a clear one written by an older version, which it returns unchanged so
that nothing stored before sealing existed stops working.

The key file is created on first use, 0600 from its first byte, and never
replaced: two processes creating it at once end up with the same key (the
loser reads the winner's).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from asterfleet.errors import UsageError

PREFIX = "sealed:v1:"


class SealedUnreadable(UsageError):
    """A sealed value this key cannot open (another key sealed it)."""


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


@dataclass(frozen=True)
class Key:
    """A sealing key and the file it came from (named in errors)."""

    fernet: Fernet
    path: Path

    def seal(self, value: str) -> str:
        """``value`` sealed; a value already sealed is kept as it is."""
        if is_sealed(value):
            return value
        return PREFIX + self.fernet.encrypt(value.encode()).decode()

    def open(self, value: str, what: str) -> str:
        """The clear text of ``value`` (a clear value from before sealing
        existed is returned as it is); SealedUnreadable naming ``what``."""
        if not is_sealed(value):
            return value
        try:
            return self.fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except (InvalidToken, ValueError):
            raise SealedUnreadable(
                f"{what}: cannot be opened with the key in {self.path}: it was sealed "
                "with another key (copy the key file from the machine that stored it, "
                "or set the secret again)"
            ) from None


_cache: dict[Path, Key] = {}
_lock = threading.Lock()


def load_key(path: Path) -> Key:
    """The key in ``path``, created (0600) when the file does not exist yet."""
    path = path.expanduser()
    with _lock:
        cached = _cache.get(path)
        if cached is not None:
            return cached
        if not path.exists():
            _create(path)
        try:
            raw = path.read_bytes().strip()
            key = Key(Fernet(raw), path)
        except OSError as exc:
            raise UsageError(f"key file {path}: cannot read it: {exc.strerror}") from None
        except ValueError:
            raise UsageError(
                f"key file {path}: not a sealing key (32 url-safe base64 bytes): "
                "restore it from a backup"
            ) from None
        _cache[path] = key
        return key


def _create(path: Path) -> None:
    """Write a new key under a temporary name, then link it into place:
    the link fails if another process was first, and then its key is used."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    except OSError as exc:
        raise UsageError(f"key file {path}: cannot create it: {exc.strerror}") from None
