"""``parley ingest --wait``: a progress bar per document, following its status record until it
is ready or failed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from parley.ids import DocumentId, TenantId
from parley.status import TERMINAL_STAGES, DocumentStatus, Stage, StatusStore

TIMED_OUT = 4
STALLED_AFTER = 20.0  # seconds with every unfinished document still queued before a hint
STALLED = ("Still queued after {seconds:.0f} s: the ingest workers are busy, or none is running "
           "against this Redis. `parley up` runs them (commands find a stack with another "
           "--state through PARLEY_STATE); `parley doctor` checks the connections.")
STEPS = {Stage.QUEUED: 0, Stage.EXTRACTING: 1, Stage.CHUNKING: 2, Stage.EMBEDDING: 3}


def describe(status: DocumentStatus | None) -> tuple[str, float]:
    """(label, completed fraction 0..1) for a status. Pure."""
    if status is None:
        return "queued", 0.0
    if status.stage == Stage.READY:
        return f"ready · {status.chunks} chunks", 1.0
    if status.stage == Stage.FAILED:
        return f"failed: {status.message or status.reason}", 1.0
    pages = f" {status.pages_done}/{status.pages_total} pages" if status.pages_total else ""
    if status.stage == Stage.EMBEDDING and status.chunks:
        share = status.chunks_done / status.chunks
        return f"embedding {status.chunks_done}/{status.chunks} chunks", 0.6 + 0.4 * share
    if status.stage == Stage.EXTRACTING and status.pages_total:
        return f"extracting{pages}", 0.1 + 0.4 * status.pages_done / status.pages_total
    return f"{status.stage.value}{pages}", STEPS.get(status.stage, 0) * 0.2


async def watch(
    store: StatusStore,
    tenant: TenantId,
    documents: Sequence[tuple[DocumentId, str]],
    *,
    timeout: float,
    poll: float = 0.3,
    stalled_after: float = STALLED_AFTER,
) -> int:
    """Show progress until every document is ready or failed; returns 0 if all are ready, 1 if
    any failed, 4 on timeout (the ``parley`` exit codes). When nothing has left the queue for
    ``stalled_after`` seconds, says once what may be wrong."""
    started = time.monotonic()
    deadline = started + timeout
    hinted = False
    with Progress(
        TextColumn("{task.fields[name]:<40.40}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    ) as bars:
        tasks = {doc: bars.add_task("queued", total=1.0, name=name) for doc, name in documents}
        final: dict[DocumentId, DocumentStatus] = {}
        while len(final) < len(tasks) and time.monotonic() < deadline:
            waiting = True
            for doc, task in tasks.items():
                if doc in final:
                    continue
                status = await store.get(tenant, doc)
                label, done = describe(status)
                bars.update(task, description=label, completed=done)
                if status is not None and status.stage in TERMINAL_STAGES:
                    final[doc] = status
                waiting = waiting and (status is None or status.stage == Stage.QUEUED)
            if waiting and not final and not hinted and (
                    time.monotonic() - started >= stalled_after):
                bars.console.print(STALLED.format(seconds=stalled_after))
                hinted = True
            await asyncio.sleep(poll)
    if len(final) < len(tasks):
        print(f"timed out after {timeout:.0f} s; see: parley status")
        return TIMED_OUT
    return 1 if any(s.stage != Stage.READY for s in final.values()) else 0


async def settle(
    store: StatusStore,
    tenant: TenantId,
    documents: Sequence[DocumentId],
    *,
    timeout: float,
    poll: float = 0.3,
) -> int:
    """:func:`watch` without a display (``ingest --wait --json``): the same exit code."""
    deadline = time.monotonic() + timeout
    final: dict[DocumentId, DocumentStatus] = {}
    while True:
        for doc in documents:
            status = await store.get(tenant, doc)
            if status is not None and status.stage in TERMINAL_STAGES:
                final[doc] = status
        if len(final) == len(documents):
            return 1 if any(s.stage != Stage.READY for s in final.values()) else 0
        if time.monotonic() >= deadline:
            return TIMED_OUT
        await asyncio.sleep(poll)
