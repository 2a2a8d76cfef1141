"""EmbedThread: the local and GPU embedders' one model thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from parley.embedder.thread import EmbedThread


async def test_calls_run_one_after_another_on_one_named_thread() -> None:
    thread = EmbedThread("test-embed")
    running = 0
    most = 0

    def call(texts: list[str]) -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        time.sleep(0.01)
        running -= 1
        return f"{threading.current_thread().name}:{texts[0]}"

    got = await asyncio.gather(*(thread.run(call, [str(i)]) for i in range(4)))
    await thread.close()
    assert most == 1
    assert [g.split(":")[1] for g in got] == ["0", "1", "2", "3"]
    assert len({g.split(":")[0] for g in got}) == 1 and got[0].startswith("test-embed")


async def test_close_waits_for_the_running_call_and_later_calls_fail() -> None:
    thread = EmbedThread("test-embed")
    done = threading.Event()

    def slow(texts: list[str]) -> None:
        time.sleep(0.05)
        done.set()

    task = asyncio.ensure_future(thread.run(slow, ["x"]))
    await asyncio.sleep(0.01)
    await thread.close()
    assert done.is_set()
    await task
    with pytest.raises(RuntimeError, match="closed"):
        await thread.run(len, ["x"])
