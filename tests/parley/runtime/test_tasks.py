"""Background tasks nobody awaits: a failure is a structured log event, never asyncio's
"Task exception was never retrieved"."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import structlog.testing

from parley.runtime import tasks


async def test_a_failed_background_task_is_logged_and_retrieved() -> None:
    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, c: unretrieved.append(c))

    async def fails() -> None:
        raise ConnectionError("Redis is restarting")

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(fails(), name="grace-turn1")
        task.add_done_callback(tasks.log_failure)
        await asyncio.sleep(0.01)
        del task
        gc.collect()
        await asyncio.sleep(0)
    [event] = [e for e in logs if e["event"] == "background_task_failed"]
    assert event["task"] == "grace-turn1" and "Redis is restarting" in event["error"]
    assert unretrieved == []
