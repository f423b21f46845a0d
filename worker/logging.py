"""structlog configuration for every Phaseguard process: call ``configure_logging`` once at start.

Production renders one JSON object per line with an ISO-8601 UTC timestamp; ``console`` is for
people at a terminal. Standard-library records (rq, redis) go through the same processors.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["json", "console"]

# Defence in depth (SPEC ): the override password and the derived key never reach a log.
# Signatures are single-use and may be logged, so "signature" is deliberately not listed.
_SECRET_KEY_PARTS: Final = (
    "password",
    "passwd",
    "secret",
    "credential",
    "private_key",
    "api_key",
    "hmac_key",
    "derived_key",
    "auth_token",
)
_URL_PASSWORD_RE: Final = re.compile(r"(?P<head>rediss?://[^:/@\s]*:)[^@\s]+@")
REDACTED: Final = "[redacted]"


@lru_cache(maxsize=4096)
def _is_secret_key(name: str) -> bool:
    # cached: log lines repeat a small set of key names, and this runs for every key of every line
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_KEY_PARTS)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        # a URL with a password always holds "@": most values are returned as they are
        if "@" not in value:
            return value
        return _URL_PASSWORD_RE.sub(r"\g<head>" + REDACTED + "@", value)
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items() if not _is_secret_key(str(k))}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


_PLAIN: Final = (int, float, bool, type(None))


@lru_cache(maxsize=1024)
def _secret_keys(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in names if _is_secret_key(name))


def drop_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Drop every key that names a password or key material; blank passwords inside URLs."""
    # The consumer writes one line per message: this runs on the hot path, and the
    # same few sets of key names come back line after line.
    for key in _secret_keys(tuple(event_dict)):
        del event_dict[key]
    for key, value in event_dict.items():
        if type(value) is str:
            if "@" in value:
                event_dict[key] = _scrub(value)
        elif type(value) not in _PLAIN:
            event_dict[key] = _scrub(value)
    return event_dict


class UtcTimestamp:
    """``TimeStamper(fmt="iso", utc=True)`` at a fraction of its cost (it was the dearest step
    of a log line): the text up to the second is formatted once a second. Always six digits of
    microseconds: ``2026-11-24T02:17:13.192809Z``."""

    def __init__(self, key: str = "timestamp") -> None:
        self.key = key
        self._second: tuple[int, str] = (-1, "")  # one attribute: threads swap it atomically

    def __call__(self, logger: WrappedLogger, method_name: str,
                 event_dict: EventDict) -> EventDict:
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        cached = self._second
        if cached[0] != second:
            cached = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
            self._second = cached
        event_dict[self.key] = f"{cached[1]}.{nanos // 1000:06d}Z"
        return event_dict


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's WriteLogger with the name it was asked for, for ``add_logger_name``."""

    def __init__(self, file: TextIO, name: str | None) -> None:
        super().__init__(file)
        self.name = name or "phaseguard"


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        UtcTimestamp("timestamp"),
        drop_secrets,
    ]


def configure_logging(
    fmt: LogFormat,
    *,
    level: int = logging.INFO,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library's root logger; call once at start-up.

    Loggers are cached on first use, so tests that want ``structlog.testing.capture_logs``
    should not call this.
    """
    out = stream if stream is not None else sys.stdout
    renderer: Processor
    if fmt == "json":
        # str() keeps Decimal amounts exact ("12.50") instead of structlog's repr fallback
        renderer = structlog.processors.JSONRenderer(default=str)
        # Frame locals could hold the override password: tracebacks never show them.
        exceptions: list[Processor] = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        exceptions = []

    # structlog's own loggers render and write directly (no stdlib record, handler or
    # formatter): the consumer writes one line per message, so this path is hot.
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            *exceptions,
            renderer,
        ],
        logger_factory=lambda *args: _NamedWriteLogger(out, args[0] if args else None),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exceptions,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
