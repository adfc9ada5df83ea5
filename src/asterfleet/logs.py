"""Structured logs: one event per line, key=value (or JSON), on stderr."""

from __future__ import annotations

import logging
import sys

# structlog's package imports, when they are installed, Rich (and so
# Pygments) for coloured console tracebacks, and greenlet for its deprecated
# thread-local context. Our logs are key=value or JSON lines and use neither,
# and an agent beside every Asterisk box would carry about 6 MB for them. A
# None entry in sys.modules makes `import rich` raise ImportError, which
# structlog takes as "not installed"; the entries are removed at once, so the
# CLI can still import Rich for its tables. (A module already loaded is left
# alone: then nothing is saved, and nothing changes.)
_NOT_FOR_STRUCTLOG = ("rich", "greenlet")

if "structlog" not in sys.modules:
    _blocked = [name for name in _NOT_FOR_STRUCTLOG if name not in sys.modules]
    sys.modules.update(dict.fromkeys(_blocked))  # type: ignore[arg-type]
    try:
        import structlog
    finally:
        for _name in _blocked:
            del sys.modules[_name]

import structlog  # noqa: E402  (loaded above, or already loaded before)


def configure(level: str = "info", json: bool = False) -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.processors.KeyValueRenderer(
            key_order=["ts", "level", "event"], drop_missing=True
        )
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str, **bound: object) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name).bind(**bound)
    return logger
