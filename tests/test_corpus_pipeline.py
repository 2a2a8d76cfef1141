"""Every file of ../shared/corpus through real worker processes (ingest + embed, real embedding
model, Chroma server, Redis): each document reaches a terminal stage that matches what its
extraction test expects (``ready``, or ``failed`` with the specific reason), the ready ones have
chunks in Chroma, and neither worker process dies on the way."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from parley.status import Stage
from tests.conftest import shared_path
from tests.ingest_worker.test_corpus import EXPECTED
from tests.pipeline import pipeline_settings, running_pipeline

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.shared, pytest.mark.slow]


async def test_whole_corpus_reaches_defined_outcomes_and_no_worker_dies(
    redis_url: str, chroma_url: str, tmp_path: Path
) -> None:
    corpus = shared_path("corpus")
    files = sorted(p for p in corpus.rglob("*") if p.suffix in (".pdf", ".docx"))
    settings = pipeline_settings(redis_url, chroma_url, tmp_path / "blobs", blob_watch_seconds=0)
    env = {
        **os.environ,
        "PARLEY_REDIS_URL": redis_url,
        "PARLEY_CHROMA_URL": chroma_url,
        "PARLEY_BLOB_DIR": str(tmp_path / "blobs"),
        "PARLEY_REDIS_PREFIX": settings.redis_prefix,
        "PARLEY_BLOB_WATCH_SECONDS": "0",
        "PARLEY_CHUNK_TOKENS": str(settings.chunk_tokens),
        "PARLEY_CHUNK_OVERLAP_TOKENS": str(settings.chunk_overlap_tokens),
    }
    # Only the clients of the in-process pipeline are used: its consumers listen elsewhere.
    idle = settings.queues.model_copy(
        update={
            "ingest": settings.queues.ingest.model_copy(update={"name": "idle-i"}),
            "embed": settings.queues.embed.model_copy(update={"name": "idle-e"}),
        }
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=env,
            stdout=(tmp_path / f"{module}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for module in ("ingest_worker", "embed_worker")
    ]
    try:
        async with running_pipeline(settings.model_copy(update={"queues": idle})) as helper:
            helper.settings = settings
            ids = {
                path.relative_to(corpus).as_posix(): await helper.upload(
                    path.name, path.read_bytes(), folder=path.parent.name
                )
                for path in files
            }
            done = await helper.wait(ids.values(), timeout=600)
            for name, doc in ids.items():
                status = done[doc]
                expected = EXPECTED[name]
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
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(40)
            except subprocess.TimeoutExpired:
                worker.kill()
        await asyncio.sleep(0)
