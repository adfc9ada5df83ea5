"""Files that hold secrets: created 0600 from the first byte on.

Writing a file and chmod-ing it afterwards leaves a window in which any
local user can open it (and keep the descriptor). Here the file is created
with mode 0600 under a temporary name, filled, fsynced and renamed over the
target, so the secret is never readable by others and never half-written.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from asterfleet.errors import UsageError

SECRET_MODE = 0o600


def write_secret(path: Path, data: str | bytes, *, what: str | None = None) -> None:
    """Write ``data`` to ``path`` with mode 0600 (atomic; UsageError naming
    ``what`` or the path when the directory is missing or not writable)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SECRET_MODE)
    except FileExistsError:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SECRET_MODE)
    except OSError as exc:
        raise UsageError(f"{what or path}: cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UsageError(f"{what or path}: cannot write {path}: {exc.strerror}") from None
