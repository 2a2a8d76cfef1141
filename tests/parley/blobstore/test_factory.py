"""open_blob_store picks the adapter the settings name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from parley.blobstore import BlobStore
from parley.blobstore.azure import AzureBlobStore
from parley.blobstore.factory import open_blob_store
from parley.blobstore.local import LocalBlobStore
from parley.errors import ConfigError
from parley.settings import Settings


async def test_local(tmp_path: Path) -> None:
    store = open_blob_store(Settings(blob_dir=tmp_path, blob_container="docs-a"))
    assert isinstance(store, LocalBlobStore) and isinstance(store, BlobStore)
    await store.put("x.txt", b"x")
    assert (tmp_path / "docs-a" / "x.txt").read_bytes() == b"x"
    await store.close()


async def test_azure_connection_string(azurite_connection_string: str) -> None:
    settings = Settings(
        blob_backend="azure", blob_container="factory-made",
        blob_connection_string=SecretStr(azurite_connection_string), blob_create_container=True,
    )
    store = open_blob_store(settings)
    assert isinstance(store, AzureBlobStore) and isinstance(store, BlobStore)
    try:
        await store.put("x.txt", b"x")
        assert (await store.get("x.txt"))[0] == b"x"
    finally:
        await store.close()


async def test_azure_account_url_uses_entra_id() -> None:
    settings = Settings(
        blob_backend="azure", blob_account_url="https://example.blob.core.windows.net"
    )
    store = open_blob_store(settings)
    assert isinstance(store, AzureBlobStore)
    await store.close()  # closes the DefaultAzureCredential it made, no network needed


def test_azure_without_address() -> None:
    with pytest.raises(ConfigError, match="PARLEY_BLOB_ACCOUNT_URL"):
        open_blob_store(Settings(blob_backend="azure"))
