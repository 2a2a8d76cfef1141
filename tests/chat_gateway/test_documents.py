"""The portal's document API on a real gateway (uvicorn on a free port), real Redis, the local
blob folder and Azurite for the SAS path. Ingest requests are read back from the real ingest
queue; document events from a real websocket client."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from pydantic import SecretStr

from backends.factory import open_blob_store
from chat_gateway.app import Gateway
from chat_gateway.documents import Rejected, detect, display_name, named
from chat_gateway.server import running
from chat_gateway.services import Services
from parley.blobstore import BlobStore
from parley.broker.redis import RedisBroker
from parley.contracts import IngestRequest
from parley.embedder.local import LocalEmbedder
from parley.errors import Reject
from parley.filetypes import SUPPORTED
from parley.ids import DocumentId, TenantId, document_id
from parley.settings import Settings
from parley.status import Stage, StatusStore
from parley.vectors.chroma import ChromaStore
from tests.chat_gateway.conftest import receive_until, ws_url
from tests.fixtures import documents as fx

RUN = uuid.uuid4().hex[:6]
ACME = TenantId(f"acme{RUN}")
OTHER = TenantId(f"other{RUN}")
AUTH = {"Authorization": "Bearer tok-acme"}
PDF = fx.text_pdf(["The Zanzibar project budget was 42 million euros."])


@dataclass
class Api:
    url: str
    http: httpx.AsyncClient
    settings: Settings
    redis: aioredis.Redis
    status: StatusStore
    broker: RedisBroker
    blobs: BlobStore

    async def queued(self) -> list[IngestRequest]:
        """The ingest requests waiting on the ingest queue (consumed and acked here)."""
        queue = self.settings.queues.ingest.name
        out = []
        for message in await self.broker.receive(queue, max_messages=50, wait=0.2):
            out.append(IngestRequest.model_validate_json(message.body))
            await self.broker.ack(message)
        return out

    async def upload(self, name: str, data: bytes, token: str = "tok-acme") -> httpx.Response:
        return await self.http.post("/api/documents", params={"name": name}, content=data,
                                    headers={"Authorization": f"Bearer {token}"})


MakeApi = Callable[..., contextlib.AbstractAsyncContextManager[Api]]


@pytest.fixture
def make_api(
    redis_url: str, chroma_url: str, indexed: ChromaStore, embedder: LocalEmbedder,
    tmp_path: Path,
) -> MakeApi:
    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[Api]:
        values: dict[str, Any] = {
            "redis_url": redis_url, "chroma_url": chroma_url,
            "redis_prefix": f"docs{uuid.uuid4().hex[:10]}", "blob_dir": tmp_path / "blobs",
            "local_tokens": SecretStr(f"tok-acme:{ACME},tok-other:{OTHER}"),
        }
        values.update(overrides)
        settings = Settings.model_validate(values)
        client = aioredis.Redis.from_url(redis_url)
        services = Services.assemble(
            settings, redis=client, broker=RedisBroker(client, prefix=settings.redis_prefix),
            embedder=embedder, store=indexed,
        )
        gateway = Gateway(settings, services=services)
        blobs = open_blob_store(settings)
        try:
            async with running(gateway) as url, httpx.AsyncClient(base_url=url) as http:
                yield Api(url, http, settings, client, services.status,
                          RedisBroker(client, prefix=settings.redis_prefix), blobs)
        finally:
            await blobs.close()
            await gateway.shutdown()
            await client.aclose()

    return make


# --- pure checks ------------------------------------------------------------------------------


def word_zip(main: str = "word/document.xml") -> bytes:
    return fx.docx(["Hello"], main_part=main)


def test_detect_tells_pdf_and_docx_by_their_bytes() -> None:
    assert detect(PDF) == "pdf"
    assert detect(b"garbage before the header " + PDF) == "pdf"  # header within the first KiB
    assert detect(word_zip()) == "docx"
    assert detect(word_zip("word/renamed.xml")) == "docx"  # found through [Content_Types].xml
    assert detect(fx.encrypted_docx()) == "docx"  # the ingest worker reports it as encrypted


def test_detect_tells_the_other_formats_by_their_bytes_too() -> None:
    assert detect(fx.pptx([fx.Slide(title="Plan", body=["Ship it"])])) == "pptx"
    assert detect(fx.xlsx({"Stock": [["Item", "Count"], ["Bolts", 5]]})) == "xlsx"
    assert detect(fx.html_page("Notes", "<p>Hello.</p>")) == "html"
    assert detect(b"# Notes\n\nSome *text* and a [link](https://example.org).\n") == "markdown"
    assert detect(b"just some notes\n") == "text"
    assert detect("Caf\u00e9 cr\u00e8me, tr\u00e8s bien.\n".encode("cp1252")) == "text"


@pytest.mark.parametrize(("data", "looks"), [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "a PNG image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "a JPEG image"),
    (bytes(range(256)) * 4, "some other binary file"),
])
def test_detect_says_what_a_rejected_file_looks_like(data: bytes, looks: str) -> None:
    with pytest.raises(Rejected) as caught:
        detect(data)
    assert caught.value.reason == "unsupported_type"
    assert caught.value.message == f"not a supported document: it looks like {looks}"


def test_detect_rejects_other_zips_legacy_office_and_empty_files() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", b"\xff\xd8\xff")
    cases = {buffer.getvalue(): "not a Word, PowerPoint or Excel", fx.legacy_doc(): "legacy Office",
             b"": "empty"}
    for data, words in cases.items():
        with pytest.raises(Rejected, match=words):
            detect(data)


def test_names_are_untrusted() -> None:
    assert display_name("C:\\Users\\x\\..\\report\x00.pdf") == "report.pdf"
    assert named("../../etc/passwd", "pdf") == "passwd.pdf"
    assert named("notes.docx", "pdf") == "notes.pdf"  # the bytes decide the extension
    assert named("Q3 report.PDF", "pdf") == "Q3 report.pdf"
    assert named("deck.pdf", "pptx") == "deck.pptx"
    assert named("stock.csv", "text") == "stock.csv"  # an extension of the kind stays
    assert named("README", "markdown") == "README.md"
    with pytest.raises(Reject):
        named("///", "pdf")


# --- the routes -------------------------------------------------------------------------------


async def test_every_route_needs_a_valid_token(make_api: MakeApi) -> None:
    async with make_api() as api:
        some_id = "0" * 24
        calls = [
            api.http.get("/api/documents"),
            api.http.post("/api/documents", params={"name": "a.pdf"}, content=PDF),
            api.http.post("/api/uploads", json={"name": "a.pdf", "size": 3}),
            api.http.post("/api/documents/commit", json={"path": f"{ACME}/a.pdf"}),
            api.http.delete(f"/api/documents/{some_id}"),
            api.http.post(f"/api/documents/{some_id}/retry"),
            api.http.get("/api/documents", headers={"Authorization": "Bearer wrong"}),
        ]
        responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses] == [401] * len(calls)
        assert all(r.json()["error"]["code"] == "unauthenticated" for r in responses)
        assert [b async for b in api.blobs.list()] == []
        assert await api.queued() == []


async def test_upload_stores_announces_and_pushes_a_queued_event(make_api: MakeApi) -> None:
    async with make_api() as api:
        async with websockets.connect(ws_url(api.url, "tok-acme")) as acme, \
                websockets.connect(ws_url(api.url, "tok-other")) as other:
            await receive_until(acme, {"ready"})
            await receive_until(other, {"ready"})
            await asyncio.sleep(1.2)  # the progress hub starts reading within its block time
            response = await api.upload("Zanzibar plan.pdf", PDF)
            assert response.status_code == 201, response.text
            body = response.json()
            event = (await receive_until(acme, {"document"}))[-1]
            with pytest.raises(TimeoutError):
                await receive_until(other, {"document"}, timeout=1.5)
        path = f"{ACME}/Zanzibar plan.pdf"
        assert body["path"] == path
        doc = body["document"]
        assert doc["document_id"] == document_id(ACME, path)
        assert doc["stage"] == "queued" and doc["filename"] == "Zanzibar plan.pdf"
        assert event["document_id"] == doc["document_id"] and event["stage"] == "queued"
        data, info = await api.blobs.get(path)
        assert data == PDF
        [request] = await api.queued()
        assert (request.action, request.path, request.tenant, request.etag) == (
            "upsert", path, ACME, info.etag)
        listed = (await api.http.get("/api/documents", headers=AUTH)).json()
        assert [d["document_id"] for d in listed["documents"]] == [doc["document_id"]]
        assert listed["limits"]["max_upload_bytes"] == api.settings.max_upload_bytes
        assert listed["limits"]["extensions"] == [
            ".pdf", ".docx", ".pptx", ".xlsx", ".html", ".md", ".txt"
        ]
        theirs = await api.http.get("/api/documents",
                                    headers={"Authorization": "Bearer tok-other"})
        assert theirs.json()["documents"] == []


async def test_the_bytes_decide_the_type_and_names_cannot_escape(make_api: MakeApi) -> None:
    async with make_api() as api:
        docx = await api.upload("minutes", word_zip())
        sneaky = await api.upload("../../../etc/<img src=x onerror=alert(1)>.pdf", PDF)
        assert docx.status_code == sneaky.status_code == 201
        assert docx.json()["path"] == f"{ACME}/minutes.docx"
        # changed to be safe, so tagged with a hash of the name (see the next test)
        assert re.fullmatch(rf"{ACME}/_img src_x onerror_alert\(1\)_-[0-9a-f]{{8}}\.pdf",
                            sneaky.json()["path"])
        # shown as typed (the portal renders it as text), stored under a safe path
        assert sneaky.json()["document"]["filename"] == "<img src=x onerror=alert(1)>.pdf"
        paths = sorted([b.path async for b in api.blobs.list()])
        assert paths == sorted([docx.json()["path"], sneaky.json()["path"]])
        assert all(p.startswith(f"{ACME}/") and ".." not in p for p in paths)


async def test_names_made_safe_alike_are_stored_apart(make_api: MakeApi) -> None:
    async with make_api() as api:
        dots = await api.upload("....pdf", PDF)
        spaces = await api.upload("  .pdf", PDF)
        again = await api.upload("....pdf", PDF)
        assert dots.status_code == spaces.status_code == again.status_code == 201
        # Both would be "pdf.pdf" once made safe: neither may replace the other...
        assert dots.json()["path"] != spaces.json()["path"]
        # ...while the same name uploaded again is the same document (a new version).
        assert again.json()["path"] == dots.json()["path"]
        assert len([b async for b in api.blobs.list()]) == 2


async def test_other_types_empty_files_and_bad_names_are_refused(make_api: MakeApi) -> None:
    async with make_api() as api:
        png = await api.upload("photo.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
        legacy = await api.upload("old.doc", fx.legacy_doc())
        empty = await api.upload("empty.pdf", b"")
        dots = await api.upload("...", PDF)
        missing = await api.http.post("/api/documents", content=PDF, headers=AUTH)
        assert (png.status_code, legacy.status_code) == (415, 415)
        assert png.json()["error"] == {
            "code": "unsupported_type",
            "message": "photo.pdf: not a supported document: it looks like a PNG image",
            "hint": f"upload {SUPPORTED} files",
        }
        assert "legacy Office file" in legacy.json()["error"]["message"]
        assert empty.status_code == 400 and empty.json()["error"]["code"] == "empty"
        assert dots.status_code == 400 and dots.json()["error"]["code"] == "bad_filename"
        assert missing.status_code == 400
        assert [b async for b in api.blobs.list()] == []
        assert await api.queued() == []


async def test_the_size_limit_is_enforced_on_the_server(make_api: MakeApi) -> None:
    async with make_api(max_upload_bytes=4096) as api:
        big = PDF + b"%" + b"x" * 5000
        declared = await api.upload("big.pdf", big)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for start in range(0, len(big), 1000):
                yield big[start:start + 1000]

        streamed = await api.http.post("/api/documents", params={"name": "big.pdf"},
                                       content=chunks(), headers=AUTH)
        small = await api.upload("small.pdf", PDF)
        target = await api.http.post("/api/uploads", json={"name": "big.pdf", "size": 5000},
                                     headers=AUTH)
        assert declared.status_code == streamed.status_code == target.status_code == 413
        assert declared.json()["error"]["message"] == "big.pdf: over the 4 KiB upload limit"
        assert small.status_code == 201
        assert [b.path async for b in api.blobs.list()] == [f"{ACME}/small.pdf"]
        assert [r.path for r in await api.queued()] == [f"{ACME}/small.pdf"]


async def test_a_local_store_sends_uploads_through_the_gateway(make_api: MakeApi) -> None:
    async with make_api() as api:
        target = await api.http.post("/api/uploads", json={"name": "a b.pdf", "size": 10},
                                     headers=AUTH)
        assert target.status_code == 200
        assert target.json() == {"method": "gateway", "url": "/api/documents?name=a%20b.pdf"}
        bad = await api.http.post("/api/uploads", json={"name": "a.pdf"}, headers=AUTH)
        assert bad.status_code == 400


async def test_delete_removes_the_blob_and_asks_the_worker_to_drop_the_chunks(
    make_api: MakeApi,
) -> None:
    async with make_api() as api:
        doc = (await api.upload("plan.pdf", PDF)).json()["document"]
        await api.queued()
        path = f"{ACME}/plan.pdf"
        await api.redis.hset(api.settings.keys.watched(api.settings.blob_container), path, "e")
        foreign = await api.http.delete(f"/api/documents/{doc['document_id']}",
                                        headers={"Authorization": "Bearer tok-other"})
        unknown = await api.http.delete(f"/api/documents/{'a' * 24}", headers=AUTH)
        malformed = await api.http.delete("/api/documents/..%2f..%2fx", headers=AUTH)
        assert foreign.status_code == unknown.status_code == malformed.status_code == 404
        assert await api.blobs.stat(path) is not None  # untouched by the refused calls
        response = await api.http.delete(f"/api/documents/{doc['document_id']}", headers=AUTH)
        assert response.status_code == 202
        assert response.json()["document"]["message"] == "being deleted"
        assert await api.blobs.stat(path) is None
        assert not await api.redis.hexists(
            api.settings.keys.watched(api.settings.blob_container), path)
        [request] = await api.queued()
        assert (request.action, request.path, request.tenant) == ("delete", path, ACME)


async def test_retry_reposts_a_failed_document_only(make_api: MakeApi) -> None:
    async with make_api() as api:
        doc = (await api.upload("plan.pdf", PDF)).json()["document"]
        ident = DocumentId(doc["document_id"])
        await api.queued()
        url = f"/api/documents/{ident}/retry"
        not_failed = await api.http.post(url, headers=AUTH)
        assert not_failed.status_code == 409
        assert "only a failed document" in not_failed.json()["error"]["message"]
        await api.status.update(ACME, ident, stage=Stage.FAILED, reason="timeout",
                                message="extraction took longer than allowed")
        response = await api.http.post(url, headers=AUTH)
        assert response.status_code == 202
        again = response.json()["document"]
        assert again["stage"] == "queued" and again["reason"] is None
        [request] = await api.queued()
        info = await api.blobs.stat(f"{ACME}/plan.pdf")
        assert info is not None
        assert (request.action, request.path, request.etag) == ("upsert", info.path, info.etag)
        await api.status.update(ACME, ident, stage=Stage.FAILED)
        await api.blobs.delete(info.path)
        gone = await api.http.post(url, headers=AUTH)
        assert gone.status_code == 410 and gone.json()["error"]["hint"] == "upload it again"
        assert await api.queued() == []


async def test_azure_uploads_go_straight_to_the_store_through_a_sas_url(
    make_api: MakeApi, azurite_connection_string: str,
) -> None:
    container = f"docs{RUN}"
    async with make_api(blob_backend="azure", blob_container=container, max_upload_bytes=4096,
                        blob_connection_string=SecretStr(azurite_connection_string),
                        blob_create_container=True) as api:
        target = (await api.http.post("/api/uploads", json={"name": "plan.pdf",
                                                             "size": len(PDF)},
                                      headers=AUTH)).json()
        assert target["method"] == "sas" and target["path"] == f"{ACME}/plan.pdf"
        assert "sig=" in target["url"] and "sp=cw" in target["url"]
        async with httpx.AsyncClient() as outside:  # the browser, not the gateway
            put = await outside.put(target["url"], content=PDF, headers=target["headers"])
            assert put.status_code == 201, put.text
            big = (await api.http.post("/api/uploads", json={"name": "big.pdf", "size": 10},
                                       headers=AUTH)).json()
            await outside.put(big["url"], content=b"%PDF-" + b"x" * 5000,
                              headers=big["headers"])
        commit = await api.http.post(target["commit"]["url"], json=target["commit"]["body"],
                                     headers=AUTH)
        assert commit.status_code == 201, commit.text
        assert commit.json()["document"]["stage"] == "queued"
        data, info = await api.blobs.get(f"{ACME}/plan.pdf")
        assert data == PDF
        [request] = await api.queued()
        assert (request.path, request.etag, request.container) == (info.path, info.etag,
                                                                     container)
        # A SAS cannot cap the size: the commit checks it and deletes what is over.
        over = await api.http.post("/api/documents/commit", json=big["commit"]["body"],
                                   headers=AUTH)
        assert over.status_code == 413 and "it was deleted" in over.json()["error"]["message"]
        assert await api.blobs.stat(big["path"]) is None
        # Another tenant cannot announce (or probe) this tenant's blobs.
        foreign = await api.http.post("/api/documents/commit", json={"path": info.path},
                                      headers={"Authorization": "Bearer tok-other"})
        missing = await api.http.post("/api/documents/commit",
                                      json={"path": f"{ACME}/never.pdf"}, headers=AUTH)
        assert (foreign.status_code, missing.status_code) == (400, 404)
        assert await api.queued() == []
