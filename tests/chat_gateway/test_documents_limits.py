"""The document API against hostile clients (issue 12, items 9, 10 and 12) on a real gateway:
uploads are streamed (never held whole in memory) and refused at the limit, concurrent uploads
are capped per tenant and per replica, a stored path of another tenant is never acted on, and
deeply nested JSON is a 400."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator

from parley.ids import DocumentId, document_id
from parley.status import Stage
from tests.chat_gateway.test_documents import ACME, AUTH, OTHER, PDF, MakeApi, make_api

__all__ = ["make_api"]

MIB = 1024 * 1024
BLOCK = b"\0" * (64 * 1024)


async def body(size: int, head: bytes = b"%PDF-1.4\n", gate: asyncio.Event | None = None
               ) -> AsyncIterator[bytes]:
    """``size`` bytes in 64 KiB pieces (the same block again and again: the client allocates
    nothing per piece); waits on ``gate`` after the first piece when given."""
    yield head
    sent = len(head)
    if gate is not None:
        await gate.wait()
    while sent < size:
        piece = BLOCK[: min(len(BLOCK), size - sent)]
        sent += len(piece)
        yield piece


async def test_upload_is_streamed_not_held_in_memory(make_api: MakeApi) -> None:
    async with make_api(max_upload_bytes=40 * MIB) as api:
        tracemalloc.start()
        try:
            ok = await api.http.post("/api/documents", params={"name": "big.pdf"},
                                     content=body(32 * MIB), headers=AUTH, timeout=120)
            _, peak_ok = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            over = await api.http.post("/api/documents", params={"name": "huge.pdf"},
                                       content=body(48 * MIB), headers=AUTH, timeout=120)
            _, peak_over = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert ok.status_code == 201, ok.text
        info = await api.blobs.stat(ok.json()["path"])
        assert info is not None and info.size == 32 * MIB
        assert over.status_code == 413 and over.json()["error"]["code"] == "too_large"
        assert [b.path async for b in api.blobs.list(f"{ACME}/huge")] == []
    # Held whole, 32 MiB would have cost 32 MiB at least (64 MiB with the join); streamed, the
    # cost is a few blocks of the blob store's copy (4 MiB each), whatever the upload's size.
    assert peak_ok < 12 * MIB, peak_ok
    assert peak_over < 12 * MIB, peak_over


async def test_concurrent_uploads_are_capped_per_tenant(make_api: MakeApi) -> None:
    async with make_api(max_tenant_concurrent_uploads=1, max_concurrent_uploads=4) as api:
        gate = asyncio.Event()
        first = asyncio.create_task(api.http.post(
            "/api/documents", params={"name": "slow.pdf"}, content=body(2 * MIB, gate=gate),
            headers=AUTH, timeout=60))
        await asyncio.sleep(0.5)  # the first upload is in the gateway, its body not finished
        busy = await api.upload("second.pdf", PDF)
        other = await api.upload("theirs.pdf", PDF, token="tok-other")
        gate.set()
        done = await first
        again = await api.upload("second.pdf", PDF)
    assert busy.status_code == 429, busy.text
    assert busy.json()["error"]["code"] == "too_many_uploads"
    assert "retry-after" in busy.headers
    assert other.status_code == 201  # another tenant is not held up
    assert done.status_code == 201 and again.status_code == 201


async def test_concurrent_uploads_are_capped_per_replica(make_api: MakeApi) -> None:
    async with make_api(max_tenant_concurrent_uploads=4, max_concurrent_uploads=1) as api:
        gate = asyncio.Event()
        first = asyncio.create_task(api.http.post(
            "/api/documents", params={"name": "slow.pdf"}, content=body(2 * MIB, gate=gate),
            headers=AUTH, timeout=60))
        await asyncio.sleep(0.5)
        busy = await api.upload("theirs.pdf", PDF, token="tok-other")
        gate.set()
        assert (await first).status_code == 201
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "too_many_uploads"


async def test_stored_path_of_another_tenant_is_never_acted_on(make_api: MakeApi) -> None:
    """A record of OTHER whose path is ACME's blob (what a crossing ingest message used to
    leave): OTHER can neither delete nor re-post ACME's blob through it."""
    async with make_api() as api:
        mine = await api.upload("secret.pdf", PDF)
        path = mine.json()["path"]
        assert path.startswith(f"{ACME}/")
        await api.queued()
        crossed = document_id(OTHER, path)
        await api.status.update(OTHER, crossed, filename="secret.pdf", path=path,
                                stage=Stage.FAILED, reason="gave_up")
        headers = {"Authorization": "Bearer tok-other"}
        deleted = await api.http.delete(f"/api/documents/{crossed}", headers=headers)
        retried = await api.http.post(f"/api/documents/{crossed}/retry", headers=headers)
        assert deleted.status_code == 404 and retried.status_code == 404
        assert await api.blobs.stat(path) is not None  # ACME's blob is still there
        assert await api.queued() == []  # nothing was posted for it
        # ACME's own record works as before.
        own = DocumentId(mine.json()["document"]["document_id"])
        assert (await api.http.delete(f"/api/documents/{own}", headers=AUTH)).status_code == 202


async def test_nested_json_bodies_are_400(make_api: MakeApi) -> None:
    nested = "[" * 5_000  # json raises RecursionError on it
    async with make_api() as api:
        for route in ("/api/uploads", "/api/documents/commit"):
            response = await api.http.post(route, content=nested, headers=AUTH)
            assert response.status_code == 400, (route, response.text)
            assert response.json()["error"]["code"] == "bad_request"
