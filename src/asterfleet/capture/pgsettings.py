"""The PostgreSQL settings a capture store wants, beside its defaults.

Durability stays PostgreSQL's own (fsync, synchronous commit and full-page
writes on): a stored message survives a crash of the server or the machine.

One setting changes: ``wal_buffers``, PostgreSQL's memory for WAL not yet
written. By default it is 1/32 of ``shared_buffers`` (4 MB with the stock
128 MB). A writer's batch of 5,000 messages is about 4 MB of WAL, so with
the default the inserting backends keep writing the WAL themselves in the
middle of their ``COPY`` and wait for it; with 64 MB the WAL writer does it
beside them. Measured with ``bench/capture_ingest.py`` (TCP, 20 s, at the
limit, two runs each): 169,000–170,000 messages/s stored with the default,
199,000–201,000/s with 64 MB.

Checkpoints are left as they are. At 100,000 messages a second PostgreSQL
checkpoints every few seconds (and says so in its log), but spacing them
out (``checkpoint_timeout`` 15 min, ``max_wal_size`` 16 GB) cost more CPU
per message here, not less: 6.8–7.3 µs in the backends against 6.0, as the
inserting backends then write out the dirty pages they evict themselves.

:data:`CAPTURE_SETTINGS` is what ``deploy/`` passes to the capture
database, what the benchmarks run with (``--pg-settings capture``), and
what the collector compares with the server's at start-up
(:func:`differences`, logged once as ``capture_store_settings``).
"""

from __future__ import annotations

from collections.abc import Iterable

#: name → value, in PostgreSQL's own units (as ``postgres -c name=value`` takes it).
CAPTURE_SETTINGS: dict[str, str] = {"wal_buffers": "64MB"}

#: Each setting in megabytes, to compare with what the server reports.
_WANTED_MB: dict[str, float] = {"wal_buffers": 64}

#: The question :func:`differences` answers from.
SETTINGS_QUERY = "SELECT name, setting, unit FROM pg_settings WHERE name IN ('wal_buffers')"

_UNIT_MB = {"B": 1 / 1024 / 1024, "kB": 1 / 1024, "8kB": 8 / 1024, "MB": 1.0, "GB": 1024.0}


def command_line(settings: dict[str, str] = CAPTURE_SETTINGS) -> list[str]:
    """``-c name=value`` for each setting (``postgres`` / ``pg_ctl -o``)."""
    return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]


def differences(server: Iterable[tuple[str, str, str | None]]) -> dict[str, str]:
    """The settings below the capture store's, from ``pg_settings`` rows
    (name, setting, unit): name → ``"<server's> (want <ours>)"``. More than
    we ask for is not a difference; a value we cannot read is left alone."""
    out: dict[str, str] = {}
    for name, setting, unit in server:
        want = _WANTED_MB.get(name)
        factor = _UNIT_MB.get(unit or "")
        if want is None or factor is None:
            continue
        try:
            value = float(setting) * factor
        except ValueError:
            continue
        if value < want:
            out[name] = f"{value:g}MB (want {CAPTURE_SETTINGS[name]})"
    return out
