"""The Chroma adapter against a real Chroma server: through a proxy that can stop answering, a
request that gets no answer ends as a Retry within the timeout, never a hang; a new collection
gets the graph Parley asks for; the chunks come back with their vectors when asked."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest

from parley.errors import Retry
from parley.ids import ChunkId, DocumentId, TenantId
from parley.vectors.chroma import HNSW, ChromaStore, collection_name
from parley.vectors.store import ChunkRecord


class Proxy:
    """Forwards TCP to ``target`` until :meth:`freeze`; then reads and forwards nothing, as a
    server that hangs (a deadlock, a stopped process, a dropped route) does."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.frozen = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def freeze(self) -> None:
        self.frozen.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if self.frozen.is_set():
                    await asyncio.Event().wait()  # swallowed: no answer, ever
                writer.write(data)
                await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()


@pytest.fixture
async def proxy(chroma_url: str) -> AsyncIterator[Proxy]:
    parsed = urlparse(chroma_url)
    proxy = Proxy(parsed.hostname or "127.0.0.1", parsed.port or 8000)
    proxy.server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    async with proxy.server:
        yield proxy
        proxy.server.close()


async def test_a_server_that_stops_answering_is_a_retry_within_the_timeout(proxy: Proxy) -> None:
    store = await ChromaStore.connect(proxy.url, "timeout-model", timeout=1.5)
    tenant = TenantId("chroma-timeout")
    assert await store.existing(tenant, [ChunkId("c0")]) == set()  # answered while forwarding
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(Retry, match="Chroma request failed: ReadTimeout"):
        await store.existing(tenant, [ChunkId("c1")])
    assert 1.0 < time.monotonic() - started < 10
    await store.close()


async def test_connect_to_a_server_that_never_answers_raises_within_the_timeout(
    proxy: Proxy,
) -> None:
    proxy.freeze()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await ChromaStore.connect(proxy.url, "timeout-model", timeout=1.0)
    assert time.monotonic() - started < 10


async def test_a_new_collection_gets_the_graph_asked_for_and_gives_its_vectors_back(
    chroma_url: str,
) -> None:
    store = await ChromaStore.connect(chroma_url, "graph-model")
    tenant = TenantId("chroma-graph")
    vectors = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]
    await store.upsert(tenant, [
        ChunkRecord(ChunkId(f"c{i}"), DocumentId("d"), "v1", f"text {i}", vector, {"page": i})
        for i, vector in enumerate(vectors)
    ])
    made = await store._client.get_collection(collection_name(tenant, "graph-model"))
    graph = made.configuration_json["hnsw"]
    # Chroma's own default is 16 links and a build breadth of 100 (see parley.vectors.chroma).
    assert (graph["max_neighbors"], graph["ef_construction"]) == (32, 200)
    assert graph["space"] == HNSW["space"] == "cosine"

    plain = sorted(await store.records(tenant), key=lambda r: r.chunk_id)
    assert [(r.chunk_id, r.document_id, r.version, r.text, len(r.embedding)) for r in plain] == [
        ("c0", "d", "v1", "text 0", 0), ("c1", "d", "v1", "text 1", 0)]
    full = sorted(await store.records(tenant, vectors=True), key=lambda r: r.chunk_id)
    assert [[round(float(x), 6) for x in r.embedding] for r in full] == vectors
    assert [r.metadata["page"] for r in full] == [0, 1]
    some = await store.records(tenant, vectors=True, only=["c1", "gone"])  # "gone": not there
    assert [(r.chunk_id, [round(float(x), 6) for x in r.embedding]) for r in some] == [
        ("c1", vectors[1])]
    assert await store.records(tenant, only=[]) == []
    await store.upsert(tenant, [ChunkRecord(ChunkId("e0"), DocumentId("e"), "v1", "other",
                                            vectors[0], {"page": 0})])
    assert sorted(await store.ids(tenant)) == ["c0", "c1", "e0"]  # the tenant's: each document's
    assert sorted(await store.ids(tenant, DocumentId("d"))) == ["c0", "c1"]
    assert await store.ids(TenantId("chroma-nobody")) == []
    await store.close()
