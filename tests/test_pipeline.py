"""Ingestion end to end on real servers (Redis, Chroma server, local blob store) with the real
local embedding model: upload -> queue -> extract -> chunk -> embed -> Chroma -> search."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ingest_worker import events
from parley.contracts import IngestRequest, dump
from parley.ids import document_id
from parley.status import Stage
from tests.fixtures import documents
from tests.pipeline import Pipeline, pipeline_settings, running_pipeline

ALPHA = "The Alpha reactor produced 4,213 megawatts in March. " + documents.lorem(80, seed=1)
BETA = "Beta quarterly revenue was 97.3 million dollars. " + documents.lorem(80, seed=2)
GAMMA = "Gamma turbines need inspection every 18 months. " + documents.lorem(80, seed=3)


@pytest.fixture
async def pipeline(redis_url: str, chroma_url: str, tmp_path: Path) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(redis_url, chroma_url, tmp_path / "blobs")
    async with running_pipeline(settings) as running:
        yield running


async def test_documents_become_searchable_with_pages(pipeline: Pipeline) -> None:
    pdf_id = await pipeline.upload("report.pdf", documents.text_pdf([ALPHA, BETA, GAMMA]))
    docx_id = await pipeline.upload(
        "notes.docx", documents.docx(["Delta pumps run at 3,600 rpm.", documents.lorem(40)])
    )
    done = await pipeline.wait([pdf_id, docx_id])
    assert {s.stage for s in done.values()} == {Stage.READY}
    assert done[pdf_id].pages_total == 3 and done[pdf_id].pages_done == 3
    assert done[pdf_id].chunks == done[pdf_id].chunks_done > 0

    hits = await pipeline.searcher.search(pipeline.tenant, "quarterly revenue of Beta", k=3)
    assert hits[0].metadata["filename"] == "report.pdf"
    assert hits[0].metadata["page"] == 2
    assert "97.3 million" in hits[0].text
    docx_hits = await pipeline.searcher.search(pipeline.tenant, "pump speed rpm", k=1)
    assert docx_hits[0].metadata["filename"] == "notes.docx"
    assert "page" not in docx_hits[0].metadata  # DOCX has no pages


async def test_failures_get_a_specific_reason_not_zero_chunks(pipeline: Pipeline) -> None:
    cases = {
        "scan.pdf": (documents.scanned_pdf(2), "no_text_layer"),
        "locked.pdf": (documents.encrypted_pdf(), "encrypted"),
        "broken.pdf": (documents.malformed_pdf(), "malformed"),
        "photo.pdf": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "unsupported_type"),
    }
    ids = {name: await pipeline.upload(name, data) for name, (data, _) in cases.items()}
    done = await pipeline.wait(ids.values())
    for name, (_, reason) in cases.items():
        status = done[ids[name]]
        assert status.stage == Stage.FAILED, name
        assert status.reason == reason, (name, status)
        assert status.message  # plain words for the user
        assert await pipeline.clients.vectors.count(pipeline.tenant, ids[name]) == 0


# One fact per file, found nowhere else: (file name, bytes, question, words of the answer).
FACTS: list[tuple[str, bytes, str, str]] = [
    (
        "scan.pdf",
        documents.scanned_text_pdf(
            [
                "Harbour log, spring edition.\nThe ferry timetable changes in April.",
                "The lighthouse keeper on Skarvoy island logged 311 storm nights in 1987.",
            ]
        ),
        "How many storm nights did the lighthouse keeper on Skarvoy log?",
        "311 storm nights",
    ),
    (
        "facilities.docx",
        documents.docx(
            [
                documents.Heading("Kitchen"),
                "The kitchen is shared by teams on floors three and four. " + documents.lorem(40),
                documents.Picture(
                    "The espresso machine on floor 4 is descaled every 19 days by Hortensia Blum."
                ),
            ]
        ),
        "How often is the espresso machine descaled?",
        "every 19 days",
    ),
    (
        "launch.pptx",
        documents.pptx(
            [
                documents.Slide(
                    title="Mission overview", body=["Earth observation", "Polar orbit"]
                ),
                documents.Slide(
                    title="Budget", table=[["Item", "Cost"], ["Ground station", "2.1 MEUR"]]
                ),
                documents.Slide(
                    title="Schedule",
                    body=["Integration finished in September"],
                    notes="The Vega satellite launch slipped to 14 November: a valve fault.",
                ),
            ]
        ),
        "Why did the Vega satellite launch slip?",
        "valve fault",
    ),
    (
        "stock.xlsx",
        documents.xlsx(
            {
                "Summary": [["Report", "Quarterly stock count"], ["Prepared by", "Logistics"]],
                "Warehouses": [
                    ["Warehouse", "City", "Pallets"],
                    ["Boreas", "Bergen", 120],
                    ["Zephyr", "Tromso", 4812],
                    ["Notus", "Stavanger", 77],
                ],
            }
        ),
        "How many pallets does warehouse Zephyr hold?",
        "Pallets: 4812",
    ),
    (
        "bakery.html",
        documents.html_page(
            "Marlowe bakery",
            "<p>The Marlowe bakery bakes 640 rye loaves every Saturday morning.</p>"
            f"<h2>History</h2><p>{documents.lorem(60, seed=4)}</p>",
        ),
        "How many rye loaves does the Marlowe bakery bake?",
        "640 rye loaves",
    ),
    (
        "office-guide.md",
        (
            "# Office guide\n\nWelcome to the office.\n\n## Parking\n\n"
            "Bicycle parking is in the basement, bay C, and the door code is 7741.\n\n"
            f"## Printing\n\n{documents.lorem(50, seed=5)}\n"
        ).encode(),
        "What is the door code of the bicycle parking?",
        "door code is 7741",
    ),
    (
        "menu.txt",
        (
            "Weekly menu of the Café Brûlé.\n\n"
            "Chef Amélie Durand of the Café Brûlé makes 85 crêpes every Tuesday.\n"
        ).encode("cp1252"),
        "How many crêpes does chef Amélie Durand make?",
        "85 crêpes",
    ),
]


async def test_every_format_becomes_searchable_and_each_fact_comes_from_its_file(
    pipeline: Pipeline,
) -> None:
    """A scan (OCR), a picture of text in a DOCX (OCR), a PPTX, an XLSX, an HTML page, a
    Markdown file and a text file in a legacy encoding: each fact comes back in the top 3 from
    its own file, with where it is (slide, sheet, heading, page, OCR)."""
    ids = {name: await pipeline.upload(name, data) for name, data, _, _ in FACTS}
    done = await pipeline.wait(ids.values(), timeout=300)
    for name, doc in ids.items():
        assert done[doc].stage == Stage.READY, (name, done[doc])
    found = {}
    for name, _, question, answer in FACTS:
        hits = await pipeline.searcher.search(pipeline.tenant, question, k=3)
        mine = [
            h for h in hits if h.metadata["filename"] == name and answer in " ".join(h.text.split())
        ]
        assert mine, (name, [(h.metadata["filename"], h.text[:80]) for h in hits])
        found[name] = mine[0].metadata
    assert found["scan.pdf"]["page"] == 2 and found["scan.pdf"]["ocr"] is True
    assert (
        found["facilities.docx"]["ocr"] is True and found["facilities.docx"]["heading"] == "Kitchen"
    )
    assert (found["launch.pptx"]["kind"], found["launch.pptx"]["page"]) == ("pptx", 3)
    assert found["launch.pptx"]["heading"] == "Schedule"
    assert found["stock.xlsx"]["heading"] == "Warehouses"
    assert found["office-guide.md"]["heading"] == "Parking"
    assert "ocr" not in found["menu.txt"]
    # The page's navigation and footer are not content.
    furniture = await pipeline.searcher.search(
        pipeline.tenant, "Subscribe to the newsletter. Cookie settings. Privacy policy.", k=20
    )
    page = [h.text for h in furniture if h.metadata["filename"] == "bakery.html"]
    assert page and not any("newsletter" in t or "Cookie" in t for t in page)


async def test_unchanged_reupload_is_skipped(pipeline: Pipeline) -> None:
    data = documents.text_pdf([ALPHA])
    doc = await pipeline.upload("a.pdf", data)
    first = (await pipeline.wait([doc]))[doc]
    ids_before = await pipeline.clients.vectors.ids(pipeline.tenant, doc)
    await pipeline.upload("a.pdf", data)
    again = await pipeline.wait(
        [doc], until=lambda s: s is not None and "unchanged" in (s.message or "")
    )
    assert again[doc].stage == Stage.READY
    assert again[doc].version == first.version
    assert "unchanged" in (again[doc].message or "")
    assert await pipeline.clients.vectors.ids(pipeline.tenant, doc) == ids_before


async def test_changed_reupload_swaps_chunks_with_no_gap_and_no_stale(pipeline: Pipeline) -> None:
    old = documents.text_pdf([ALPHA, BETA])
    new = documents.text_pdf([GAMMA, "Epsilon valves close at 40 bar. " + documents.lorem(60)])
    doc = await pipeline.upload("swap.pdf", old)
    first = (await pipeline.wait([doc]))[doc]

    seen: list[set[str]] = []
    stop = asyncio.Event()

    async def watch_search() -> None:
        while not stop.is_set():
            hits = await pipeline.searcher.search(pipeline.tenant, "reactor valves turbines", k=20)
            seen.append({h.version for h in hits})
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch_search())
    await asyncio.sleep(0.1)
    await pipeline.upload("swap.pdf", new)
    second = (
        await pipeline.wait(
            [doc],
            until=lambda s: s is not None and s.stage == Stage.READY and s.version != first.version,
        )
    )[doc]
    await asyncio.sleep(0.2)
    stop.set()
    await watcher
    assert second.version != first.version
    # At every moment exactly one version was served: never none, never both.
    assert all(len(versions) == 1 for versions in seen), [v for v in seen if len(v) != 1][:3]
    assert {first.version, second.version} == set().union(*seen)
    # Old chunks are gone from the store, not just hidden (after the clean-up grace).
    for _ in range(150):
        remaining = await pipeline.clients.vectors.count(pipeline.tenant, doc)
        if remaining == second.chunks:
            break
        await asyncio.sleep(0.1)
    assert remaining == second.chunks


async def test_deleted_blob_removes_chunks(pipeline: Pipeline) -> None:
    doc = await pipeline.upload("gone.pdf", documents.text_pdf([ALPHA]))
    status = (await pipeline.wait([doc]))[doc]
    assert await pipeline.clients.vectors.count(pipeline.tenant, doc) > 0
    await pipeline.clients.blobs.delete(status.path)
    event = events.blob_event(
        "delete", account="x", container=pipeline.settings.blob_container, path=status.path
    )
    await pipeline.clients.brokers.for_queue(pipeline.settings.queues.ingest).publish(
        pipeline.settings.queues.ingest.name, json.dumps([event]).encode()
    )
    for _ in range(100):
        if await pipeline.clients.status.get(pipeline.tenant, doc) is None:
            break
        await asyncio.sleep(0.1)
    assert await pipeline.clients.status.get(pipeline.tenant, doc) is None
    assert await pipeline.clients.vectors.count(pipeline.tenant, doc) == 0


async def test_event_grid_event_from_another_system_is_ingested(pipeline: Pipeline) -> None:
    """Another system writes the blob and posts Event Grid's CloudEvents JSON to the queue."""
    path = f"{pipeline.tenant}/inbox/external.pdf"
    info = await pipeline.clients.blobs.put(path, documents.text_pdf([BETA]))
    cloud_event = {
        "specversion": "1.0",
        "type": "Microsoft.Storage.BlobCreated",
        "source": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/a",
        "id": "1",
        "time": "2026-11-21T10:00:00Z",
        "subject": f"/blobServices/default/containers/documents/blobs/{path}",
        "data": {
            "api": "PutBlob",
            "eTag": info.etag,
            "sequencer": "0" * 31 + "1",
            "contentType": "application/pdf",
            "contentLength": info.size,
        },
    }
    await pipeline.clients.redis.xadd(  # as a foreign producer would: plain XADD
        f"{pipeline.settings.redis_prefix}:q:{pipeline.settings.queues.ingest.name}",
        {"body": json.dumps(cloud_event)},
    )
    doc = document_id(pipeline.tenant, path)
    status = (await pipeline.wait([doc]))[doc]
    assert status.stage == Stage.READY
    assert status.filename == "external.pdf"


async def test_a_request_for_a_missing_blob_ends_failed_not_found(pipeline: Pipeline) -> None:
    broker = pipeline.clients.brokers.for_queue(pipeline.settings.queues.ingest)
    path = f"{pipeline.tenant}/never-uploaded.pdf"
    await broker.publish(pipeline.settings.queues.ingest.name, dump(IngestRequest(path=path)))
    doc = document_id(pipeline.tenant, path)
    status = (await pipeline.wait([doc]))[doc]
    assert (status.stage, status.reason) == (Stage.FAILED, "not_found")
    assert status.filename == "never-uploaded.pdf" and "upload it again" in (status.message or "")
    # A BlobCreated event overtaken by the blob's delete (no record) stays ignored.
    late = IngestRequest(path=f"{pipeline.tenant}/deleted.pdf", sequencer="0" * 31 + "1")
    await broker.publish(pipeline.settings.queues.ingest.name, dump(late))
    await asyncio.sleep(1.0)
    assert await pipeline.clients.status.get(pipeline.tenant, document_id(
        pipeline.tenant, late.path)) is None


async def test_out_of_order_events_use_the_sequencer(pipeline: Pipeline) -> None:
    doc = await pipeline.upload("order.pdf", documents.text_pdf([ALPHA]))
    status = (await pipeline.wait([doc]))[doc]
    broker = pipeline.clients.brokers.for_queue(pipeline.settings.queues.ingest)
    queue = pipeline.settings.queues.ingest.name
    newer = IngestRequest(path=status.path, sequencer="0" * 30 + "20", container="documents")
    await broker.publish(queue, dump(newer))
    await pipeline.wait([doc], until=lambda s: s is not None and s.sequencer == newer.sequencer)
    # A delete that happened *before* (lower sequencer) arrives late: it must not delete.
    older_delete = IngestRequest(
        path=status.path, sequencer="0" * 30 + "10", action="delete", container="documents"
    )
    await broker.publish(queue, dump(older_delete))
    await asyncio.sleep(1.5)
    still = await pipeline.clients.status.get(pipeline.tenant, doc)
    assert still is not None and still.stage == Stage.READY
    assert await pipeline.clients.vectors.count(pipeline.tenant, doc) > 0


async def test_an_event_redelivered_after_its_worker_died_is_finished(pipeline: Pipeline) -> None:
    doc = await pipeline.upload("resumed.pdf", documents.text_pdf([BETA]))
    status = (await pipeline.wait([doc]))[doc]
    broker = pipeline.clients.brokers.for_queue(pipeline.settings.queues.ingest)
    queue = pipeline.settings.queues.ingest.name
    event = IngestRequest(path=status.path, sequencer="0" * 30 + "40", container="documents")
    # What a worker killed mid-extraction leaves: the event's sequencer recorded, the document
    # extracting. The same event delivered again must be handled, not dropped as stale.
    await pipeline.clients.status.update(
        pipeline.tenant, doc, stage=Stage.EXTRACTING, sequencer=event.sequencer
    )
    await broker.publish(queue, dump(event))
    settled = await pipeline.wait(
        [doc], until=lambda s: s is not None and s.stage in (Stage.READY, Stage.FAILED)
    )
    assert settled[doc].stage == Stage.READY and settled[doc].sequencer == event.sequencer
    assert await pipeline.clients.vectors.count(pipeline.tenant, doc) > 0


async def test_malformed_messages_are_dead_lettered_and_work_goes_on(pipeline: Pipeline) -> None:
    broker = pipeline.clients.brokers.for_queue(pipeline.settings.queues.ingest)
    queue = pipeline.settings.queues.ingest.name
    await broker.publish(queue, b"{not json")
    await broker.publish(queue, b'{"eventType": "Microsoft.Storage.BlobCreated"}')
    await broker.publish(queue, json.dumps({"schema": "parley.ingest.v1", "path": ""}).encode())
    embed = pipeline.clients.brokers.for_queue(pipeline.settings.queues.embed)
    await embed.publish(pipeline.settings.queues.embed.name, b'{"schema": "parley.chunks.v1"}')
    doc = await pipeline.upload("after.pdf", documents.text_pdf([GAMMA]))
    assert (await pipeline.wait([doc]))[doc].stage == Stage.READY
    for _ in range(50):
        dead = await broker.dead_letters(queue)
        if len(dead) == 3:
            break
        await asyncio.sleep(0.1)
    # Handled concurrently, so dead-lettered in any order.
    assert sorted(d.reason.split(" [")[0][:20] for d in dead) == [
        "item 0: Microsoft.St",
        "item 0: invalid inge",
        "not JSON: Expecting ",
    ]
    assert all("malformed_message" in d.reason for d in dead)
    [dead_batch] = await embed.dead_letters(pipeline.settings.queues.embed.name)
    assert "not a parley.chunks.v1 batch" in dead_batch.reason


async def test_blob_dropped_by_another_tool_is_ingested_by_the_watcher(
    redis_url: str, chroma_url: str, tmp_path: Path
) -> None:
    settings = pipeline_settings(redis_url, chroma_url, tmp_path / "blobs")
    async with running_pipeline(settings, watch=True) as pipeline:
        folder = tmp_path / "blobs" / settings.blob_container / pipeline.tenant / "dropped"
        folder.mkdir(parents=True)
        (folder / "copied.pdf").write_bytes(documents.text_pdf([ALPHA]))
        doc = document_id(pipeline.tenant, f"{pipeline.tenant}/dropped/copied.pdf")
        status = (await pipeline.wait([doc], timeout=30))[doc]
        assert status.stage == Stage.READY
        (folder / "copied.pdf").unlink()
        for _ in range(100):
            if await pipeline.clients.status.get(pipeline.tenant, doc) is None:
                break
            await asyncio.sleep(0.1)
        assert await pipeline.clients.status.get(pipeline.tenant, doc) is None


async def test_rate_limited_embeddings_endpoint_loses_nothing(
    redis_url: str, chroma_url: str, tmp_path: Path
) -> None:
    """An Azure-OpenAI-shaped endpoint answers 429 with Retry-After for a while: the batches
    wait (inside the call, then through the queue's retry) and every document still lands."""
    from pydantic import SecretStr

    from tests.peers.azure_openai import FakeAzureOpenAI

    with FakeAzureOpenAI(dimensions=64) as fake:
        settings = pipeline_settings(
            redis_url,
            chroma_url,
            tmp_path / "blobs",
            embedder="azure-openai",
            azure_openai_endpoint=fake.url,
            azure_openai_api_key=SecretStr(fake.api_key),
            azure_openai_embedding_dimensions=64,
        )
        async with running_pipeline(settings) as pipeline:
            fake.rate_limit(12, retry_after=0.2)  # more 429s than one call retries
            ids = [
                await pipeline.upload(f"r{i}.pdf", documents.text_pdf([ALPHA, BETA][: 1 + i % 2]))
                for i in range(4)
            ]
            done = await pipeline.wait(ids, timeout=120)
            assert all(s.stage == Stage.READY for s in done.values())
            for doc, status in done.items():
                assert await pipeline.clients.vectors.count(pipeline.tenant, doc) == status.chunks
            throttled = [r for r in fake.requests if r.status == 429]
            assert len(throttled) == 12
            retried = sum(c.stats.retried for c in pipeline.consumers)
            assert retried >= 1  # at least one batch went back to the queue and came back
