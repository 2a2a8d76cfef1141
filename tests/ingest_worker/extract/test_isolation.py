"""extract_isolated / ExtractorPool with real child processes: same result as in process, progress
relayed, and a child that hangs, dies or is abandoned is killed without harming the caller."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypedDict

import pytest

from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.isolation import ExtractorPool, close_default_pool, extract_isolated
from ingest_worker.extract.types import ExtractionFailed
from tests.fixtures import documents as docs


class Limits(TypedDict):
    max_pages: int
    max_bytes: int


LIMITS: Limits = {"max_pages": 5000, "max_bytes": 200 * 1024 * 1024}
# Generous: the limit under test is ours (hang/crash handling), not the machine's speed.
TIMEOUT = 120.0


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def gone(pid: int) -> bool:
    for _ in range(200):
        if not running(pid):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def long_pdf() -> bytes:
    """Enough pages that extraction takes seconds: there is time to interrupt it."""
    return docs.text_pdf([docs.lorem(300, seed=i % 7) for i in range(1500)])


@pytest.fixture
async def pool() -> AsyncIterator[ExtractorPool]:
    extractor_pool = ExtractorPool(max_idle=2)
    yield extractor_pool
    await extractor_pool.close()
    assert extractor_pool.pids() == []


async def test_same_result_as_in_process_with_progress(pool: ExtractorPool) -> None:
    data = docs.with_title(docs.text_pdf([docs.lorem(100, seed=i) for i in range(6)],
                                 outline=[("Part", 2)]), "Six Pages of Latin")
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    isolated = await pool.extract(data, "six.pdf", timeout=TIMEOUT, on_progress=progress, **LIMITS)
    assert isolated == extract(data, "six.pdf", **LIMITS)
    assert isolated.title == "Six Pages of Latin"  # the file's stored title comes back too
    assert seen[0][0] >= 1 and seen[-1] == (6, 6)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    word = await pool.extract(docs.rich_docx(), "rich.docx", timeout=TIMEOUT, **LIMITS)
    assert word == extract(docs.rich_docx(), "rich.docx", **LIMITS)


async def test_failures_come_back_as_the_same_reason_and_the_child_is_reused(
    pool: ExtractorPool,
) -> None:
    with pytest.raises(ExtractionFailed) as caught:
        await pool.extract(docs.encrypted_pdf(), "locked.pdf", timeout=TIMEOUT, **LIMITS)
    assert (caught.value.reason, caught.value.message) == (
        "encrypted",
        "encrypted PDF: it needs a password to open",
    )
    pid = pool.pids()
    result = await pool.extract(
        docs.text_pdf(["After a failure."]), "ok.pdf", timeout=TIMEOUT, **LIMITS
    )
    assert result.blocks[0].text == "After a failure."
    assert pool.pids() == pid  # a clean failure does not cost the warm child


async def test_timeout_kills_the_child(pool: ExtractorPool, long_pdf: bytes) -> None:
    await pool.extract(docs.text_pdf(["warm up"]), "w.pdf", timeout=TIMEOUT, **LIMITS)
    (pid,) = pool.pids()
    with pytest.raises(ExtractionFailed) as caught:
        await pool.extract(long_pdf, "long.pdf", timeout=0.2, **LIMITS)
    assert caught.value.reason == "timeout"
    assert await gone(pid)
    # The pool carries on with a fresh child.
    result = await pool.extract(
        docs.text_pdf(["Still working."]), "n.pdf", timeout=TIMEOUT, **LIMITS
    )
    assert result.blocks[0].text == "Still working."


async def test_a_child_that_dies_mid_document_is_extractor_crashed(
    pool: ExtractorPool, long_pdf: bytes
) -> None:
    killed: list[int] = []

    async def segfault_on_first_page(done: int, total: int) -> None:
        if not killed:
            (pid,) = pool.pids()
            os.kill(pid, signal.SIGSEGV)  # what a pdfium crash looks like from outside
            killed.append(pid)

    with pytest.raises(ExtractionFailed) as caught:
        await pool.extract(
            long_pdf, "crash.pdf", timeout=TIMEOUT, on_progress=segfault_on_first_page, **LIMITS
        )
    assert (caught.value.reason, caught.value.message) == (
        "extractor_crashed",
        "the extractor process died on this file (killed by SIGSEGV)",
    )
    assert pool.pids() == []


async def test_a_warm_child_that_died_while_idle_is_replaced_transparently(
    pool: ExtractorPool,
) -> None:
    await pool.extract(docs.text_pdf(["warm up"]), "w.pdf", timeout=TIMEOUT, **LIMITS)
    (pid,) = pool.pids()
    os.kill(pid, signal.SIGKILL)
    assert await gone(pid)
    result = await pool.extract(docs.text_pdf(["Fresh child."]), "f.pdf", timeout=TIMEOUT, **LIMITS)
    assert result.blocks[0].text == "Fresh child."
    assert pool.pids() != [pid]


async def test_cancelling_the_caller_kills_the_child(pool: ExtractorPool, long_pdf: bytes) -> None:
    started = asyncio.Event()

    async def progress(done: int, total: int) -> None:
        started.set()

    task = asyncio.create_task(
        pool.extract(long_pdf, "long.pdf", timeout=TIMEOUT, on_progress=progress, **LIMITS)
    )
    await asyncio.wait_for(started.wait(), TIMEOUT)
    (pid,) = pool.pids()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await gone(pid)
    assert pool.pids() == []


async def test_concurrent_documents_each_get_a_child(pool: ExtractorPool) -> None:
    texts = [f"Document number {i} of four." for i in range(4)]
    results = await asyncio.gather(
        *(
            pool.extract(docs.text_pdf([t]), f"{i}.pdf", timeout=TIMEOUT, **LIMITS)
            for i, t in enumerate(texts)
        )
    )
    assert [r.blocks[0].text for r in results] == texts
    assert len(pool.pids()) == 2  # max_idle children stay warm, the extra ones were stopped


async def test_extract_isolated_uses_the_loops_default_pool() -> None:
    try:
        result = await extract_isolated(
            docs.docx(["Default pool."]), "d.docx", timeout=TIMEOUT, **LIMITS
        )
        assert result.blocks[0].text == "Default pool."
    finally:
        await close_default_pool()


async def test_refusals_that_need_no_parsing_never_start_a_child(pool: ExtractorPool) -> None:
    with pytest.raises(ExtractionFailed) as caught:
        await pool.extract(b"x" * 2048, "big.pdf", timeout=TIMEOUT, max_pages=10, max_bytes=1024)
    assert caught.value.reason == "too_large"
    with pytest.raises(ExtractionFailed) as empty:
        await pool.extract(b"", "empty.pdf", timeout=TIMEOUT, **LIMITS)
    assert empty.value.reason == "empty"
    assert pool.pids() == []
