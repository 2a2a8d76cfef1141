"""The ``store`` fixture: one instance per adapter (a directory, and Azurite), so every
contract test runs on each. Each test gets a fresh root or a fresh container."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backends.azure_blob import AzureBlobStore
from parley.blobstore import BlobStore
from parley.blobstore.local import LocalBlobStore


def fresh_container() -> str:
    return f"t-{uuid.uuid4().hex[:16]}"


@pytest.fixture
async def azure_store(azurite_connection_string: str) -> AsyncIterator[AzureBlobStore]:
    store = AzureBlobStore.from_connection_string(
        azurite_connection_string, fresh_container(), create_container=True
    )
    yield store
    await store.close()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "store", "documents")


@pytest.fixture(params=["local", "azure"])
def store(request: pytest.FixtureRequest) -> BlobStore:
    name = "local_store" if request.param == "local" else "azure_store"
    adapter: BlobStore = request.getfixturevalue(name)
    return adapter
