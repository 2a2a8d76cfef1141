"""Stopping a background task for good.

redis-py on Python 3.11 can swallow a cancel that lands while a command is being sent (its
``asyncio.wait_for`` returns the result instead of raising), so a loop over Redis commands may
carry on after one ``cancel()``, and a ``close()`` that awaits it once hangs forever."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

CANCEL_AGAIN_AFTER = 0.5  # seconds

log = structlog.get_logger(__name__)


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` until it has ended (again every ``CANCEL_AGAIN_AFTER`` seconds); its
    result or exception is dropped. Returns at once for None or a finished task."""
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_AFTER)
    if task is not None and not task.cancelled():
        task.exception()  # retrieved: a failure was already logged by the task's owner


def log_failure(task: asyncio.Task[Any]) -> None:
    """A done callback for a background task nobody awaits: its exception, if any, is logged
    as a structured ``background_task_failed`` event (with the task's name) and retrieved, so
    asyncio never reports "Task exception was never retrieved"."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background_task_failed", task=task.get_name(),
                  error=f"{type(exc).__name__}: {exc}", exc_info=exc)
