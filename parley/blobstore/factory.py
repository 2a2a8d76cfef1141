"""Build the configured blob store from :class:`parley.settings.Settings`."""

from __future__ import annotations

from parley.blobstore import BlobStore
from parley.errors import ConfigError
from parley.settings import Settings


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store the settings name; no I/O happens until the first call on it.

    ``PARLEY_BLOB_BACKEND=local``: a directory at ``PARLEY_BLOB_DIR``.
    ``PARLEY_BLOB_BACKEND=azure``: ``PARLEY_BLOB_CONNECTION_STRING`` when set (Azurite, keys),
    else ``PARLEY_BLOB_ACCOUNT_URL`` with DefaultAzureCredential. The caller closes the store.
    """
    if settings.blob_backend == "local":
        from parley.blobstore.local import LocalBlobStore

        return LocalBlobStore(settings.blob_dir, settings.blob_container)
    from parley.blobstore.azure import AzureBlobStore

    if settings.blob_connection_string is not None:
        return AzureBlobStore.from_connection_string(
            settings.blob_connection_string.get_secret_value(),
            settings.blob_container,
            create_container=settings.blob_create_container,
        )
    if settings.blob_account_url:
        return AzureBlobStore.from_account_url(
            settings.blob_account_url,
            settings.blob_container,
            create_container=settings.blob_create_container,
        )
    raise ConfigError(
        "the azure blob backend needs an account URL or a connection string",
        hint="set PARLEY_BLOB_ACCOUNT_URL (Entra ID) or PARLEY_BLOB_CONNECTION_STRING",
    )
