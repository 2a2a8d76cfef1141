"""The one worker thread an in-process embedder runs its model on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class EmbedThread:
    """Runs blocking calls on one dedicated thread, one after another (two concurrent calls would
    only fight over the same cores or device), keeping the event loop free. Cancelling the
    awaiting task does not stop a call already running; its result is dropped. :meth:`close`
    waits for the running call, then releases the thread; :meth:`run` raises after it."""

    def __init__(self, name: str) -> None:
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name
        )

    async def run(self, call: Callable[[list[str]], T], texts: list[str]) -> T:
        if self._executor is None:
            raise RuntimeError("embedder is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, texts)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)
