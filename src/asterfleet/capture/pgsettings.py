"""The PostgreSQL settings a capture store wants, beside its defaults.

Durability stays PostgreSQL's own (fsync, synchronous commit and full-page
writes on): a stored message survives a crash of the server or the machine.
What changes is how often PostgreSQL checkpoints. After each checkpoint the
first change to every page is written to the WAL whole (8 KiB, a
full-page image), and a capture store changes index pages all over the
Call-ID index. With the defaults (``max_wal_size`` 1 GB) a collector storing
100,000 messages a second (about 100 MB of WAL) checkpoints every few
seconds, and the full-page images soon outweigh the messages. Fewer
checkpoints, with the images compressed, keep the WAL near the size of what
is stored; the price is a longer replay after a crash (up to
``max_wal_size`` of WAL, a minute or two).

:data:`CAPTURE_SETTINGS` is what ``deploy/`` passes to the capture
database, what the benchmarks run with (``--pg-settings capture``), and
what the collector compares with the server's at start-up
(:func:`differences`, logged once as ``capture_store_settings``).
"""

from __future__ import annotations

from collections.abc import Iterable

#: name → value, in PostgreSQL's own units (as ``postgres -c name=value`` takes it).
CAPTURE_SETTINGS: dict[str, str] = {
    # Checkpoints by time, not by WAL volume: every 15 minutes.
    "checkpoint_timeout": "15min",
    "max_wal_size": "16GB",
    # Full-page images compressed (lz4: cheap next to the WAL write it saves).
    "wal_compression": "lz4",
    # Room for the WAL of a few batches between flushes.
    "wal_buffers": "64MB",
}

#: What each setting is in ``pg_settings``' units, to compare with the server.
_IN_UNITS: dict[str, tuple[str, float]] = {
    "checkpoint_timeout": ("s", 15 * 60),
    "max_wal_size": ("MB", 16 * 1024),
}


def command_line(settings: dict[str, str] = CAPTURE_SETTINGS) -> list[str]:
    """``-c name=value`` for each setting (``postgres`` / ``pg_ctl -o``)."""
    return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]


def differences(server: Iterable[tuple[str, str, str | None]]) -> dict[str, str]:
    """The settings below the capture store's, from ``pg_settings`` rows
    (name, setting, unit): name → ``"<server's> (want <ours>)"``. A larger
    value than ours is not a difference."""
    out: dict[str, str] = {}
    for name, setting, unit in server:
        if name == "wal_compression":
            if setting in ("off", "", "0"):
                out[name] = f"{setting} (want {CAPTURE_SETTINGS[name]})"
            continue
        if name not in _IN_UNITS:
            continue
        want_unit, want = _IN_UNITS[name]
        value = _scaled(setting, unit, want_unit)
        if value is not None and value < want:
            out[name] = f"{setting}{unit or ''} (want {CAPTURE_SETTINGS[name]})"
    return out


#: The question :func:`differences` answers from.
SETTINGS_QUERY = (
    "SELECT name, setting, unit FROM pg_settings "
    "WHERE name IN ('checkpoint_timeout', 'max_wal_size', 'wal_compression')"
)

_UNIT_FACTORS = {"s": 1.0, "min": 60.0, "ms": 0.001, "MB": 1.0, "kB": 1 / 1024, "8kB": 8 / 1024}


def _scaled(setting: str, unit: str | None, want_unit: str) -> float | None:
    """A ``pg_settings`` value in ``want_unit`` (seconds or megabytes)."""
    try:
        number = float(setting)
    except ValueError:
        return None
    factor = _UNIT_FACTORS.get(unit or "")
    if factor is None or want_unit not in ("s", "MB"):
        return None
    return number * factor
