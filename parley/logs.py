"""structlog configuration: JSON lines (or console) with the ids that follow a document or a chat
turn through every queue (bound as contextvars by the consumer runtime)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr is looked up per logger, not bound once: a stream swapped and closed later (a
    # test's capture, a daemonizer) must not turn every later log call into an error.
    return structlog.PrintLogger(sys.stderr)


def configure(level: str = "INFO", *, json: bool = True, component: str | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process. Safe to call again."""
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(name)s %(message)s")
    # The Azure SDKs log every HTTP request at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if component:
        structlog.contextvars.bind_contextvars(component=component)
