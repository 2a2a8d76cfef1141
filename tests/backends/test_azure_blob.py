"""What only the Azure store does, on Azurite: SAS upload URLs, metadata on the wire, the
create-container flag, closing the credential."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob.aio import BlobServiceClient

from backends.azure_blob import AzureBlobStore
from parley.errors import ConfigError
from tests.parley.blobstore.conftest import fresh_container
from tests.parley.blobstore.test_contract import UNICODE_NAME

BLOCK_BLOB = {"x-ms-blob-type": "BlockBlob"}


async def test_upload_url_creates_that_blob(azure_store: AzureBlobStore) -> None:
    url = await azure_store.upload_url("up/report.pdf", ttl_seconds=300,
                                       content_type="application/pdf")
    assert url is not None
    async with httpx.AsyncClient() as http:
        response = await http.put(
            url, content=b"%PDF uploaded",
            headers={**BLOCK_BLOB, "x-ms-blob-content-type": "application/pdf"},
        )
    assert response.status_code == 201, response.text
    data, info = await azure_store.get("up/report.pdf")
    assert data == b"%PDF uploaded"
    assert info.content_type == "application/pdf"
    assert info.etag == response.headers["etag"].strip('"')


async def test_upload_url_cannot_read_or_touch_another_blob(azure_store: AzureBlobStore) -> None:
    await azure_store.put("up/victim.pdf", b"victim")
    url = await azure_store.upload_url("up/mine.pdf", ttl_seconds=300)
    assert url is not None
    async with httpx.AsyncClient() as http:
        assert (await http.put(url, content=b"mine", headers=BLOCK_BLOB)).status_code == 201
        read_own = await http.get(url)
        victim = url.replace("up/mine.pdf", "up/victim.pdf")
        assert victim != url
        overwrite = await http.put(victim, content=b"evil", headers=BLOCK_BLOB)
        create = await http.put(
            url.replace("up/mine.pdf", "up/other.pdf"), content=b"evil", headers=BLOCK_BLOB
        )
        read_victim = await http.get(victim)
        delete_own = await http.delete(url)
    assert read_own.status_code == 403
    assert overwrite.status_code == 403
    assert create.status_code == 403
    assert read_victim.status_code == 403
    assert delete_own.status_code == 403
    assert (await azure_store.get("up/victim.pdf"))[0] == b"victim"
    assert await azure_store.stat("up/other.pdf") is None
    assert (await azure_store.get("up/mine.pdf"))[0] == b"mine"


async def test_upload_url_expires(azure_store: AzureBlobStore) -> None:
    url = await azure_store.upload_url("up/late.pdf", ttl_seconds=1)
    assert url is not None
    await asyncio.sleep(2.5)  # the requirement is the expiry itself
    async with httpx.AsyncClient() as http:
        response = await http.put(url, content=b"late", headers=BLOCK_BLOB)
    assert response.status_code == 403
    assert await azure_store.stat("up/late.pdf") is None


async def test_upload_url_ttl_is_bounded(azure_store: AzureBlobStore) -> None:
    for ttl in (0, -5, 2 * 24 * 3600):
        with pytest.raises(ValueError):
            await azure_store.upload_url("up/x.pdf", ttl_seconds=ttl)


async def test_metadata_on_the_wire_is_ascii(
    azure_store: AzureBlobStore, azurite_connection_string: str
) -> None:
    await azure_store.put("doc.pdf", b"x", metadata={"filename": UNICODE_NAME, "plain": "a-b_c"})
    async with BlobServiceClient.from_connection_string(azurite_connection_string) as raw:
        blob = raw.get_blob_client(azure_store.container, "doc.pdf")
        props = await blob.get_blob_properties()
        wire = dict(props.metadata)
        assert wire["plain"] == "a-b_c"
        assert wire["filename"].isascii() and "%" in wire["filename"]
        # A blob written by another system, with a literal "%" in a metadata value.
        await raw.get_blob_client(azure_store.container, "foreign.txt").upload_blob(
            b"y", metadata={"note": "100% done"}
        )
    stat = await azure_store.stat("foreign.txt")
    assert stat is not None and dict(stat.metadata) == {"note": "100% done"}


async def test_missing_container_without_permission_to_create(
    azurite_connection_string: str,
) -> None:
    store = AzureBlobStore.from_connection_string(azurite_connection_string, fresh_container())
    try:
        assert await store.stat("a.txt") is None
        assert [i async for i in store.list()] == []
        with pytest.raises(ConfigError) as caught:
            await store.put("a.txt", b"x")
        assert store.container in caught.value.message
        assert "PARLEY_BLOB_CREATE_CONTAINER" in str(caught.value)
    finally:
        await store.close()


async def test_sas_connection_string_gives_no_upload_url(
    azure_store: AzureBlobStore, azurite_connection_string: str
) -> None:
    url = await azure_store.upload_url("seed.txt", ttl_seconds=60)  # creates the container
    assert url is not None
    fields = dict(part.split("=", 1) for part in azurite_connection_string.split(";") if part)
    sas = url.split("?", 1)[1]
    sas_only = f"BlobEndpoint={fields['BlobEndpoint']};SharedAccessSignature={sas}"
    store = AzureBlobStore.from_connection_string(sas_only, azure_store.container)
    try:
        assert await store.upload_url("seed.txt", ttl_seconds=60) is None
    finally:
        await store.close()


class RecordingCredential:
    """An AsyncTokenCredential that only records close(): Entra ID is not reachable here."""

    def __init__(self) -> None:
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise RuntimeError("no token in tests")

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> RecordingCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        await self.close()


async def test_close_closes_the_credential() -> None:
    credential = RecordingCredential()
    store = AzureBlobStore.from_account_url(
        "https://example.blob.core.windows.net", "documents", credential=credential
    )
    await store.close()
    assert credential.closed
