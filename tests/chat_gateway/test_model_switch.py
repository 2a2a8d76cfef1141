"""A gateway started from settings alone (``open_services``) during a switch of embedding model:
with ``PARLEY_EMBEDDING_PREVIOUS__*`` naming the model being left, a question's sources come from
both the old collection and the current one. The old model is an Azure OpenAI deployment
served by the Azure-shaped HTTP fake (vectors seeded by the text), the current one the local
MiniLM; Redis, Chroma and the gateway are real."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import SecretStr
from websockets.asyncio.client import connect

from chat_gateway import followup
from chat_gateway.app import Gateway
from chat_gateway.server import running
from parley.embedder.local import LocalEmbedder
from parley.ids import ChunkId, DocumentId, TenantId
from parley.settings import PreviousEmbedding
from parley.status import Stage
from parley.vectors.chroma import ChromaStore
from parley.vectors.store import ChunkRecord
from tests.chat_gateway.conftest import World, receive_until, ws_url
from tests.peers.azure_openai import FakeAzureOpenAI

DIMS = 64
OLD_MODEL = f"azure-openai/embeddings/{DIMS}"
FOUNDED = "When was Quill Robotics founded?"


def record(doc: str, filename: str, text: str, vector: list[float]) -> ChunkRecord:
    return ChunkRecord(ChunkId(f"{doc}-0"), DocumentId(doc), "v1", text, vector,
                       {"filename": filename, "page": 1, "ordinal": 0})


async def ask(base: str, question: str) -> list[dict[str, Any]]:
    async with connect(ws_url(base, "tok-switch")) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "ask", "question": question}))
        events = await receive_until(ws, {"final", "error"})
    assert events[-1]["type"] == "final", events[-1]
    [sources] = [e["sources"] for e in events if e["type"] == "sources"]
    return list(sources)


async def test_a_gateway_mid_switch_cites_old_only_and_new_only_documents(
    world: World, chroma_url: str, indexed: ChromaStore, embedder: LocalEmbedder
) -> None:
    tenant = TenantId(f"switch{uuid.uuid4().hex[:6]}")
    with FakeAzureOpenAI(dimensions=DIMS) as fake:
        old = await ChromaStore.connect(chroma_url, OLD_MODEL)
        try:
            # Only in the current model's collection: uploaded after the switch.
            [hq] = await embedder.embed(["Quill Robotics moved its headquarters to Lyon in 2024."])
            await indexed.upsert(tenant, [record(
                "new-doc", "quill-hq.pdf",
                "Quill Robotics moved its headquarters to Lyon in 2024.", hq)])
            # Only in the old model's collection: not re-embedded yet. The fake's vector of the
            # question itself, so the old model ranks it first for that question.
            question_vector = FakeAzureOpenAI.vector(followup.resolve(FOUNDED, []).query, DIMS)
            await old.upsert(tenant, [
                record("old-doc", "quill-history.pdf",
                       "Quill Robotics was founded in 1998 by two engineers in Grenoble.",
                       question_vector),
                record("old-doc-2", "quill-products.pdf", "Quill sells warehouse robots.",
                       FakeAzureOpenAI.vector("something else", DIMS)),
            ])
            for doc, filename in (("new-doc", "quill-hq.pdf"), ("old-doc", "quill-history.pdf"),
                                  ("old-doc-2", "quill-products.pdf")):
                await world.status.update(tenant, DocumentId(doc), filename=filename,
                                          version="v1", stage=Stage.READY)

            settings = world.settings.model_copy(update={
                "local_tokens": SecretStr(f"tok-switch:{tenant}"),
                "embedding_previous": PreviousEmbedding(
                    embedder="azure-openai", azure_openai_endpoint=fake.url,
                    azure_openai_api_key=SecretStr(fake.api_key),
                    azure_openai_embedding_deployment="embeddings",
                    azure_openai_embedding_dimensions=DIMS,
                ),
            })
            async with running(Gateway(settings)) as base:
                sources = await ask(base, FOUNDED)
            assert sources[0]["document"] == "quill-history.pdf", sources
            assert {s["document"] for s in sources} == {
                "quill-history.pdf", "quill-products.pdf", "quill-hq.pdf"}
            assert FOUNDED in fake.embedded  # the old model embedded the question

            # The same gateway without the previous model sees the new collection only.
            plain = world.settings.model_copy(
                update={"local_tokens": SecretStr(f"tok-switch:{tenant}")})
            async with running(Gateway(plain)) as base:
                sources = await ask(base, FOUNDED)
            assert {s["document"] for s in sources} == {"quill-hq.pdf"}
        finally:
            await old.drop(tenant, OLD_MODEL)
            await indexed.delete_document(tenant, DocumentId("new-doc"))
