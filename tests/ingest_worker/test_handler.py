"""Pure parts of the ingest handler: targets, versions, chunk ids and batching."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest_worker.chunking import ChunkDraft
from ingest_worker.handler import batch_sizes, batches, chunk_id, target, version_of
from parley.contracts import ChatTurn, ChunkBatch, IngestRequest
from parley.errors import Reject
from parley.ids import ConversationId, DocumentId, TenantId, TurnId
from parley.settings import Settings


def test_batch_sizes_start_small_and_cover_everything() -> None:
    assert batch_sizes(0, 32) == []
    assert batch_sizes(3, 32) == [3]
    assert batch_sizes(100, 32) == [4, 8, 16, 32, 32, 8]
    assert batch_sizes(10, 2) == [2, 2, 2, 2, 2]
    assert all(sum(batch_sizes(n, 8)) == n for n in range(50))


def test_batches_number_their_chunks_in_order() -> None:
    drafts = [ChunkDraft(i, f"t{i}", 1, None, 3) for i in range(30)]
    where = target(IngestRequest(path="acme/a.pdf"), Settings())
    out = batches(drafts, target=where, version="v", filename="a.pdf", size=8)
    assert [len(b.chunks) for b in out] == [4, 8, 8, 8, 2]
    assert [c.ordinal for b in out for c in b.chunks] == list(range(30))
    assert {b.batch_count for b in out} == {5}
    assert len({c.chunk_id for b in out for c in b.chunks}) == 30


def test_a_chunk_that_continues_a_table_keeps_its_caption_in_the_batch() -> None:
    caption = "Share repurchases (in thousands, except per share amounts)"
    drafts = [ChunkDraft(0, caption + "\nDay 1 purchases 120", 1, None, 9),
              ChunkDraft(1, "Total 5,328", 1, None, 4, unit=caption)]
    where = target(IngestRequest(path="acme/a.pdf"), Settings())
    [batch] = batches(drafts, target=where, version="v", filename="a.pdf", size=8)
    assert [c.unit for c in batch.chunks] == [None, caption]
    assert ChunkBatch.model_validate_json(batch.model_dump_json(by_alias=True)) == batch


def test_target_takes_tenant_from_the_path_or_the_default() -> None:
    settings = Settings()
    assert target(IngestRequest(path="acme/x/a.pdf"), settings).tenant == "acme"
    assert target(IngestRequest(path="a.pdf"), settings).tenant == settings.default_tenant
    explicit = IngestRequest(path="acme/a.pdf", tenant=TenantId("acme"))
    assert target(explicit, settings) == target(IngestRequest(path="acme/a.pdf"), settings)
    with pytest.raises(Reject) as caught:
        target(IngestRequest(path="a.pdf", container="elsewhere"), settings)
    assert caught.value.reason == "unknown_container"


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        # Alice's blob into Bob's collection (and Bob could then delete it).
        (IngestRequest(path="alice/secret.pdf", tenant=TenantId("bob")), "tenant_mismatch"),
        (IngestRequest(path="secret.pdf", tenant=TenantId("bob")), "tenant_mismatch"),
        (IngestRequest(path="Evil tenant:../x/a.pdf"), "invalid_tenant"),
        (IngestRequest(path="-x/a.pdf"), "invalid_tenant"),
    ],
)
def test_target_refuses_a_tenant_that_does_not_own_the_path(
    request_: IngestRequest, reason: str
) -> None:
    with pytest.raises(Reject) as caught:
        target(request_, Settings())
    assert caught.value.reason == reason


def test_tenant_names_are_checked_in_every_message() -> None:
    with pytest.raises(ValidationError):
        IngestRequest(path="a/b.pdf", tenant=TenantId("Evil tenant:../x"))
    with pytest.raises(ValidationError):
        ChunkBatch(tenant=TenantId("../x"), document_id=DocumentId("d"), version="v",
                   filename="f", path="p", batch_index=0, batch_count=1, chunks=[])
    with pytest.raises(ValidationError):
        ChatTurn(turn_id=TurnId("t"), tenant=TenantId("a b"),
                 conversation_id=ConversationId("c"), messages=[])


def test_version_changes_with_content_and_chunking_config() -> None:
    settings = Settings()
    base = version_of(b"data", settings, "model")
    assert base == version_of(b"data", settings, "model")
    assert base != version_of(b"other", settings, "model")
    assert base != version_of(b"data", settings.model_copy(update={"chunk_tokens": 99}), "model")
    assert base != version_of(b"data", settings, "another-model")
    assert chunk_id(DocumentId("d"), base, 0) != chunk_id(DocumentId("d"), base, 1)


async def test_the_wired_handler_sizes_chunks_without_loading_the_model(
    redis_url: str, chroma_url: str, tmp_path: Path
) -> None:
    from backends.clients import open_clients
    from backends.factory import model_id_of
    from ingest_worker.handler import IngestHandler
    from parley.embedder.local import MiniLMTokenizer

    settings = Settings(
        redis_url=redis_url, chroma_url=chroma_url, blob_dir=str(tmp_path), embed_device="cpu"
    )
    async with contextlib.AsyncExitStack() as stack:
        clients = await open_clients(stack, settings, blobs=True, vectors=True, embedder=False)
        handler = IngestHandler.from_clients(clients)
        assert clients.opened_embedder is None
        assert isinstance(handler.tokenizer, MiniLMTokenizer)
        assert handler.tokenizer_id == clients.model_id == await model_id_of(settings)
        # the store is the configured model's: it answers for a tenant it has never seen
        assert await clients.vectors.delete_document(TenantId("t"), DocumentId("d")) == 0
