"""structlog configuration for every Phaseguard process: call ``configure_logging`` once at start.

Production renders one JSON object per line with an ISO-8601 UTC timestamp; ``console`` is for
people at a terminal. Standard-library records (rq, redis) go through the same processors.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
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


def _is_secret_key(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_KEY_PARTS)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD_RE.sub(r"\g<head>" + REDACTED + "@", value)
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items() if not _is_secret_key(str(k))}
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def drop_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Drop every key that names a password or key material; blank passwords inside URLs."""
    for key in [k for k in event_dict if _is_secret_key(k)]:
        del event_dict[key]
    for key, value in event_dict.items():
        event_dict[key] = _scrub(value)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
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

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            *exceptions,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
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
