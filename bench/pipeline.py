"""Ingestion speed, side by side in one run on the same files (local all-MiniLM-L6-v2):

1. pipeline throughput: chunks/s end to end (upload -> blob -> queue -> ingest worker process ->
   embed worker process -> Chroma server, until every document is ``ready``) divided by the bare
   embedding throughput of the workers' embedder (the graph ``PARLEY_EMBED_GRAPH`` names, int8 by
   default) on the same chunk texts in one process (goal >= 0.9);
2. time until the documents are searchable: Parley vs the seed's approach in one process
   (pypdf + LangChain RecursiveCharacterTextSplitter(1000, 10) + Chroma.from_texts), the seed
   running the same model the plain way: the packaged ONNX file as shipped (goal >= 2x);
3. time from upload until the first chunk of a 50-page PDF is searchable.

The machine's load average is printed before and after: on a shared machine the figures move.
``--spin both`` (or ``on,off``) runs 1 and 3 twice, with the embedder's onnxruntime threads
spinning (shipped: onnxruntime's default) and sleeping (``PARLEY_EMBED_SPIN=false``).

Files: the four filings of ../shared/eval/sec10q-dev when present, else generated PDFs.
Run: python -m bench pipeline [--spin off|on|both]
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.table import render
from parley.errors import Retry
from parley.ids import TenantId

ROOT = Path(__file__).resolve().parent.parent
EVAL_DOCS = ROOT.parent / "shared" / "eval" / "sec10q-dev" / "docs"


def files() -> dict[str, bytes]:
    if EVAL_DOCS.exists():
        return {p.name: p.read_bytes() for p in sorted(EVAL_DOCS.glob("*.pdf"))}
    sys.path.insert(0, str(ROOT))
    from tests.fixtures import documents

    return {
        f"generated-{i}.pdf": documents.text_pdf(
            [documents.lorem(350, seed=i * 100 + p) for p in range(25)]
        )
        for i in range(4)
    }


def fifty_page_pdf() -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures import documents

    return documents.text_pdf([documents.lorem(400, seed=9000 + p) for p in range(50)])


def chunk_texts(pdfs: dict[str, bytes]) -> list[str]:
    """What the embed worker embeds for these files, computed with the workers' own functions."""
    from embed_worker.handler import embedding_text
    from ingest_worker.chunking import chunk
    from ingest_worker.context import document_context
    from ingest_worker.extract.dispatch import extract
    from parley.contracts import ChunkBatch
    from parley.embedder.local import MiniLMTokenizer
    from parley.settings import Settings

    settings = Settings()
    tokenizer = MiniLMTokenizer()
    texts = []
    for name, data in pdfs.items():
        blocks = extract(data, name, max_pages=5000, max_bytes=10**9).blocks
        drafts = chunk(
            blocks,
            tokenizer=tokenizer,
            max_tokens=settings.chunk_tokens,
            overlap_tokens=settings.chunk_overlap_tokens,
        )
        batch = ChunkBatch.model_validate(
            {
                "tenant": "t",
                "document_id": "d",
                "version": "v",
                "filename": name,
                "path": name,
                "batch_index": 0,
                "batch_count": 1,
                "chunks": [],
                "context": document_context(blocks, name),
            }
        )
        texts += [embedding_text(batch, d.text, d.heading) for d in drafts]
    return texts


async def bare(texts: list[str]) -> float:
    """Seconds to embed ``texts`` in one process with the workers' embedder, in their batch
    size."""
    from backends.factory import build_embedder
    from parley.settings import Settings

    size = Settings().embed_batch_size
    embedder = build_embedder(Settings())
    try:
        await embedder.embed(texts[:2])
        start = time.perf_counter()
        for i in range(0, len(texts), size):
            await embedder.embed(texts[i : i + size])
        return time.perf_counter() - start
    finally:
        await embedder.close()


def seed(pdfs: dict[str, bytes]) -> tuple[float, int]:
    """The seed's approach, in one process: seconds until searchable, chunks."""
    from langchain_chroma import Chroma
    from langchain_core.embeddings import Embeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pypdf import PdfReader

    from parley.embedder.local import LocalEmbedder, LocalEmbedderConfig

    loop = asyncio.new_event_loop()
    embedder = LocalEmbedder(LocalEmbedderConfig(graph="packaged"))  # the plain way

    class Same(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return loop.run_until_complete(embedder.embed(texts))

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    Same().embed_query("warm up")
    start = time.perf_counter()
    texts: list[str] = []
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=10)
    for name, data in pdfs.items():
        try:
            text = "\n".join(p.extract_text() or "" for p in PdfReader(io.BytesIO(data)).pages)
        except Exception as exc:
            print(f"seed: pypdf failed on {name}: {type(exc).__name__}", file=sys.stderr)
            continue
        texts += splitter.split_text(text)
    store = Chroma.from_texts(texts, Same(), collection_name=f"seed{uuid.uuid4().hex[:6]}")
    store.similarity_search("net sales", k=1)
    elapsed = time.perf_counter() - start
    loop.run_until_complete(embedder.close())
    loop.close()
    return elapsed, len(texts)


async def parley_run(
    pdfs: dict[str, bytes], state: Path, *, first_chunk_of: bytes | None = None
) -> dict[str, Any]:
    from backends.clients import open_clients
    from chat_gateway.search import Searcher
    from parley.ids import document_id
    from parley.settings import Settings
    from parley.status import Stage
    from parley.uploads import upload
    from parley_cli import localstack

    redis = localstack.start_redis(state / "redis")
    chroma = localstack.start_chroma(state)
    env = {
        "PARLEY_REDIS_URL": redis.url,
        "PARLEY_CHROMA_URL": chroma.url,
        "PARLEY_BLOB_DIR": str(state / "blobs"),
        "PARLEY_BLOB_WATCH_SECONDS": "0",
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", m],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=(state / f"{m}.log").open("ab"),
        )
        for m in ("ingest_worker", "embed_worker")
    ]
    result: dict[str, Any] = {}
    try:
        settings = Settings()
        async with contextlib.AsyncExitStack() as stack:
            clients = await open_clients(stack, settings, blobs=True, vectors=True)
            broker = clients.brokers.for_queue(settings.queues.ingest)
            searcher = Searcher(clients.embedder, clients.vectors, clients.status)
            # Warm-up document, so worker start-up (model load) is not counted.
            await _ingest(
                settings,
                clients,
                broker,
                "warm",
                {"warm.pdf": fifty_page_pdf()[:0] or next(iter(pdfs.values()))},
                Stage,
            )
            start = time.perf_counter()
            total = await _ingest(settings, clients, broker, "bench", pdfs, Stage)
            result["seconds"] = time.perf_counter() - start
            result["chunks"] = total
            if first_chunk_of is not None:
                tenant = TenantId("first")
                start = time.perf_counter()
                request, _ = await upload(
                    settings,
                    blobs=clients.blobs,
                    broker=broker,
                    tenant=tenant,
                    filename="fifty.pdf",
                    data=first_chunk_of,
                    status=clients.status,
                )
                doc = document_id(tenant, request.path)
                while True:
                    try:
                        hits = await searcher.search(tenant, "lorem ipsum", k=1)
                    except Retry:  # Chroma: a new collection's index not yet on disk
                        hits = []
                    if any(h.document_id == doc for h in hits):
                        break
                    await asyncio.sleep(0.02)
                result["first_chunk"] = time.perf_counter() - start
                while (await clients.status.get(tenant, doc)).stage != Stage.READY:  # type: ignore[union-attr]
                    await asyncio.sleep(0.05)
                result["fifty_ready"] = time.perf_counter() - start
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        chroma.stop()
        redis.stop()
    return result


async def _ingest(
    settings: Any, clients: Any, broker: Any, tenant: str, pdfs: dict[str, bytes], stage: Any
) -> int:
    from parley.ids import document_id
    from parley.uploads import upload

    tenant = TenantId(tenant)
    ids = []
    for name, data in pdfs.items():
        request, _ = await upload(
            settings,
            blobs=clients.blobs,
            broker=broker,
            tenant=tenant,
            filename=name,
            data=data,
            status=clients.status,
        )
        ids.append(document_id(tenant, request.path))
    while True:
        states = [await clients.status.get(tenant, d) for d in ids]
        if all(s is not None and s.stage in (stage.READY, stage.FAILED) for s in states):
            return sum(s.chunks for s in states if s is not None and s.stage == stage.READY)
        await asyncio.sleep(0.05)


def main() -> None:
    import argparse

    from parley.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spin", default="on", choices=["on", "off", "both", "on,off"],
                        help="PARLEY_EMBED_SPIN of bare embedding and the workers: on (shipped, "
                             "onnxruntime's default), off, or both side by side (both: off first)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    graph = Settings().embed_graph
    pdfs = files()
    texts = chunk_texts(pdfs)
    spins = ["off", "on"] if args.spin == "both" else args.spin.split(",")
    rows: list[list[Any]] = []
    for spin in spins:
        os.environ["PARLEY_EMBED_SPIN"] = "true" if spin == "on" else "false"
        bare_seconds = asyncio.run(bare(texts))
        with tempfile.TemporaryDirectory() as tmp:
            run = asyncio.run(parley_run(pdfs, Path(tmp), first_chunk_of=fifty_page_pdf()))
        bare_rate = len(texts) / bare_seconds
        pipe_rate = run["chunks"] / run["seconds"]
        tag = f"[spin {spin}] "
        rows += [
            [tag + "bare embedding (same chunks, one process)", bare_rate, "chunks/s"],
            [tag + "pipeline end to end (blob -> Chroma)", pipe_rate, "chunks/s"],
            [tag + "pipeline / bare (goal >= 0.9)", pipe_rate / bare_rate, "ratio"],
            [tag + "Parley: upload until all searchable", run["seconds"], "s"],
            [tag + "50-page PDF: upload until first chunk searchable", run["first_chunk"], "s"],
            [tag + "50-page PDF: upload until ready", run["fifty_ready"], "s"],
        ]
        rows.append([f"{tag}load average (1 min) now", os.getloadavg()[0], ""])
        parley_seconds = run["seconds"]
    seed_seconds, seed_chunks = seed(pdfs)
    rows += [
        [f"seed: pypdf + splitter + Chroma.from_texts ({seed_chunks} chunks)", seed_seconds, "s"],
        [f"seed / Parley [spin {spins[-1]}] (goal >= 2)", seed_seconds / parley_seconds, "ratio"],
    ]
    print(
        render(
            f"Ingestion of {len(pdfs)} PDFs ({sum(map(len, pdfs.values())) / 2**20:.1f} MiB), "
            f"local MiniLM ({graph} graph; the seed: the packaged file), {os.cpu_count()} cores",
            ["measure", "value", "unit"],
            rows,
        )
    )
    load_after = os.getloadavg()
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}")


if __name__ == "__main__":
    main()
