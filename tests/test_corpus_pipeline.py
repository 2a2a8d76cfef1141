"""Every file of ../shared/corpus through real worker processes (ingest + embed, real embedding
model, Chroma server, Redis): each document reaches a terminal stage that matches what its
extraction test expects (``ready``, or ``failed`` with the specific reason), the ready ones have
chunks in Chroma, and neither worker process dies on the way.

OCR is off here (``PARLEY_OCR=off``), so every file's expected outcome is its text layer's
(``EXPECTED``: the scans end ``no_text_layer``, the glyph-only file ``garbled_text``). What OCR
reads of the corpus (``WITH_OCR``) is checked through the same child process, time and memory
limits by tests/ingest_worker/extract/test_corpus.py; a worker process doing OCR by default (a
scan ending "OCR found no readable text") by tests/portal/test_portal.py; an OCR'd scan made
searchable by the pipeline by tests/test_pipeline.py. With OCR on, this test took ~175 s on 2
cores (OCR of the scans competing with embedding); off, 60-70 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.status import Stage
from tests.conftest import shared_path
from tests.ingest_worker.extract.test_corpus import EXPECTED
from tests.pipeline import (
    idle_queues,
    pipeline_settings,
    running_pipeline,
    spawn_worker,
    stop_workers,
    worker_env,
)

pytestmark = [pytest.mark.shared, pytest.mark.slow, pytest.mark.timeout(1500)]


async def test_whole_corpus_reaches_defined_outcomes_and_no_worker_dies(
    redis_url: str, chroma_url: str, tmp_path: Path
) -> None:
    corpus = shared_path("corpus")
    files = sorted(p for p in corpus.rglob("*") if p.suffix in (".pdf", ".docx"))
    # Chunks and batches as a deployment makes them (the settings' defaults: ~1,500 chunks in ~120
    # batches; tests/pipeline.py's small ones made ~2,400 in ~350, for no further assertion).
    settings = pipeline_settings(
        redis_url, chroma_url, tmp_path / "blobs", blob_watch_seconds=0,
        chunk_tokens=200, chunk_overlap_tokens=30, embed_batch_size=32,
    )
    env = worker_env(settings, PARLEY_OCR="off")
    workers = [
        spawn_worker(m, env, tmp_path / f"{m}.log") for m in ("ingest_worker", "embed_worker")
    ]
    try:
        async with running_pipeline(idle_queues(settings)) as helper:
            helper.settings = settings
            ids = {
                path.relative_to(corpus).as_posix(): await helper.upload(
                    path.name, path.read_bytes(), folder=path.parent.name
                )
                for path in files
            }
            done = await helper.wait(ids.values(), timeout=1350)
            for name, doc in ids.items():
                status = done[doc]
                expected = EXPECTED[name]  # OCR off: the text layer's outcome
                if isinstance(expected, str):
                    assert (status.stage, status.reason) == (Stage.FAILED, expected), name
                    assert status.message, name
                else:
                    assert status.stage == Stage.READY, (name, status.reason, status.message)
                    count = await helper.clients.vectors.count(helper.tenant, doc)
                    assert count == status.chunks > 0, name
            assert set(ids) == set(EXPECTED)  # no corpus file without a stated outcome
            for worker in workers:
                assert worker.poll() is None, "a worker process died on the corpus"
    finally:
        stop_workers(workers)
