"""The blob store on Azure Blob Storage (and Azurite locally), through the async SDK.

Authentication: a connection string (Azurite, or an account key as a local fallback), or the
account URL with ``azure.identity.aio.DefaultAzureCredential`` (workload identity on AKS).

Metadata: Azure carries metadata in HTTP headers, so keys must be C# identifiers and values ASCII.
Values are stored percent-encoded (see :func:`parley.blobstore.names.encode_metadata_value`) and
decoded on read, so any text (an uploaded file's original name) round-trips.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from azure.core import MatchConditions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobProperties,
    BlobSasPermissions,
    ContentSettings,
    UserDelegationKey,
    generate_blob_sas,
)
from azure.storage.blob.aio import BlobServiceClient

from parley.blobstore import BLOCK_BYTES, BlobInfo
from parley.blobstore.names import (
    check_container,
    check_content_type,
    check_metadata,
    check_path,
    check_prefix,
    decode_metadata_value,
    encode_metadata_value,
)
from parley.errors import ConfigError, NotFound, Reject, Retry, TooLarge

MAX_UPLOAD_URL_SECONDS = 24 * 3600
# A user delegation key may live up to 7 days; ask for one day and renew it when a SAS would
# outlive it.
_DELEGATION_KEY_LIFETIME = timedelta(days=1)
_CLOCK_SKEW = timedelta(minutes=5)
# Downloads in blocks of this size (the SDK's first GET would otherwise take 32 MiB at once).
_TRANSFER: dict[str, Any] = {"max_single_get_size": BLOCK_BYTES, "max_chunk_get_size": BLOCK_BYTES}


def _etag(raw: str | None) -> str:
    return (raw or "").strip('"')


def _decode(metadata: Mapping[str, str] | None) -> dict[str, str]:
    return {key: decode_metadata_value(value) for key, value in (metadata or {}).items()}


def _info(props: BlobProperties) -> BlobInfo:
    modified: datetime | None = props.last_modified
    return BlobInfo(
        path=props.name,
        etag=_etag(props.etag),
        size=int(props.size),
        content_type=props.content_settings.content_type,
        last_modified=modified.timestamp() if modified else None,
        metadata=_decode(props.metadata),
    )


class AzureBlobStore:
    """A :class:`parley.blobstore.BlobStore` on one Azure container.

    ``create_container``: create the container on the first put (or upload URL) that finds it
    missing (for Azurite and dev accounts). Without it a put into a missing container raises
    ConfigError: on Azure, Terraform creates the container and a typo should fail loudly.
    Reads of a missing container behave as reads of a missing blob.
    ``close()`` closes the HTTP client and, when the store made or was given one, the credential.
    Cancelling a call cancels its HTTP request; a put cancelled mid-upload leaves the old blob.
    """

    def __init__(
        self,
        service: BlobServiceClient,
        container: str,
        *,
        create_container: bool = False,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        self.container = check_container(container)
        self._service = service
        self._client = service.get_container_client(container)
        self._create_container = create_container
        self._container_ready = False  # known to exist (only tracked when we may create it)
        self._credential = credential
        self._delegation_key: UserDelegationKey | None = None
        self._delegation_key_expiry = datetime.min.replace(tzinfo=UTC)

    @classmethod
    def from_connection_string(
        cls, connection_string: str, container: str, *, create_container: bool = False
    ) -> AzureBlobStore:
        """Key- or SAS-based access; Azurite's connection string works as is."""
        service = BlobServiceClient.from_connection_string(connection_string, **_TRANSFER)
        return cls(service, container, create_container=create_container)

    @classmethod
    def from_account_url(
        cls,
        account_url: str,
        container: str,
        *,
        credential: AsyncTokenCredential | None = None,
        create_container: bool = False,
    ) -> AzureBlobStore:
        """Entra ID access: ``credential`` defaults to ``DefaultAzureCredential`` (workload
        identity on AKS, ``az login`` on a laptop). The identity needs Storage Blob Data
        Contributor, and Storage Blob Delegator for :meth:`upload_url`."""
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
        service = BlobServiceClient(account_url, credential=credential, **_TRANSFER)
        return cls(service, container, create_container=create_container, credential=credential)

    # --- BlobStore ------------------------------------------------------------------------------

    async def put(
        self,
        path: str,
        data: bytes | IO[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Create or replace the blob (one request up to 64 MiB, blocks beyond; a file is read
        block by block); returns its new properties. The ETag changes on every put, even of the
        same bytes."""
        check_path(path)
        meta = check_metadata(metadata)
        ctype = check_content_type(content_type)
        encoded = {key: encode_metadata_value(value) for key, value in meta.items()}
        blob = self._client.get_blob_client(path)
        start = 0 if isinstance(data, bytes) else data.tell()
        size = len(data) if isinstance(data, bytes) else data.seek(0, 2) - start
        if not isinstance(data, bytes):
            data.seek(start)
        kwargs: dict[str, Any] = {
            "length": size,
            "overwrite": True,
            "content_settings": ContentSettings(content_type=ctype),
            "metadata": encoded,
        }
        try:
            result = await blob.upload_blob(data, **kwargs)
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) != "ContainerNotFound":
                raise
            await self._ensure_container(exc)
            if not isinstance(data, bytes):
                data.seek(start)
            result = await blob.upload_blob(data, **kwargs)
        modified: datetime | None = result.get("last_modified")
        return BlobInfo(
            path=path,
            etag=_etag(result.get("etag")),
            size=size,
            content_type=ctype,
            last_modified=modified.timestamp() if modified else None,
            metadata=meta,
        )

    async def get(self, path: str) -> tuple[bytes, BlobInfo]:
        """The blob's bytes and properties. Raises :class:`parley.errors.NotFound`."""
        check_path(path)
        try:
            downloader = await self._client.get_blob_client(path).download_blob()
            data = await downloader.readall()
        except ResourceNotFoundError as exc:
            raise NotFound(f"no blob {path!r} in {self.container!r}") from exc
        props = downloader.properties
        props.name = path
        return data, _info(props)

    async def download(self, path: str, into: IO[bytes], *, max_bytes: int) -> BlobInfo:
        """The blob's properties first (TooLarge over ``max_bytes``, before any byte is read),
        then its bytes, block by block, on the condition that it is still that blob (its ETag):
        a blob replaced in between is a Retry."""
        check_path(path)
        blob = self._client.get_blob_client(path)
        try:
            props = await blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFound(f"no blob {path!r} in {self.container!r}") from exc
        if props.size > max_bytes:
            raise TooLarge(f"blob {path!r} is over the {max_bytes} byte limit",
                           size=int(props.size), limit=max_bytes)
        try:
            downloader = await blob.download_blob(
                etag=props.etag, match_condition=MatchConditions.IfNotModified
            )
            written = 0
            async for block in downloader.chunks():
                written += len(block)
                if written > max_bytes:
                    raise TooLarge(f"blob {path!r} is over the {max_bytes} byte limit",
                                   limit=max_bytes)
                into.write(block)
        except ResourceNotFoundError as exc:
            raise NotFound(f"no blob {path!r} in {self.container!r}") from exc
        except ResourceModifiedError as exc:
            raise Retry(f"blob {path!r} changed while it was read", delay=1.0) from exc
        props.name = path
        return _info(props)

    async def stat(self, path: str) -> BlobInfo | None:
        """Properties, or None when there is no such blob (or container)."""
        check_path(path)
        try:
            props = await self._client.get_blob_client(path).get_blob_properties()
        except ResourceNotFoundError:
            return None
        props.name = path
        return _info(props)

    async def delete(self, path: str) -> bool:
        """Remove the blob and its snapshots; False when it was not there."""
        check_path(path)
        try:
            await self._client.delete_blob(path, delete_snapshots="include")
        except ResourceNotFoundError:
            return False
        return True

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob whose path starts with ``prefix``, in Azure's (lexical) order, page by page.
        Names that are not valid blob paths here (e.g. folder markers ending in ``/``) are
        skipped, so every listed path can be passed to :meth:`get`."""
        check_prefix(prefix)
        pages = self._client.list_blobs(name_starts_with=prefix or None, include=["metadata"])
        try:
            async for props in pages:
                try:
                    check_path(props.name)
                except Reject:
                    continue
                yield _info(props)
        except ResourceNotFoundError:
            return  # no container yet: no blobs

    async def upload_url(
        self, path: str, *, ttl_seconds: int, content_type: str | None = None
    ) -> str | None:
        """A SAS URL allowing only create/write of this one blob for ``ttl_seconds`` (at most a
        day). The client PUTs the bytes with ``x-ms-blob-type: BlockBlob`` and should send
        ``x-ms-blob-content-type: <content_type>``: a SAS cannot enforce the content type, so
        treat the upload's type and size as untrusted when its event arrives.

        Signed with the account key of a key-based connection string, else with a user
        delegation key (Entra ID; cached and renewed). None for a SAS-only connection string,
        which cannot sign: the caller then takes the upload itself.
        """
        check_path(path)
        check_content_type(content_type)
        if not 0 < ttl_seconds <= MAX_UPLOAD_URL_SECONDS:
            raise ValueError(f"ttl_seconds must be in 1..{MAX_UPLOAD_URL_SECONDS}")
        if self._create_container and not self._container_ready:
            await self._ensure_container()  # a SAS can write a blob, not create its container
        now = datetime.now(UTC)
        expiry = now + timedelta(seconds=ttl_seconds)
        permission = BlobSasPermissions(create=True, write=True)
        account_key: str | None = getattr(self._service.credential, "account_key", None)
        if account_key:
            sas = generate_blob_sas(
                self._service.account_name or "", self.container, path,
                account_key=account_key, permission=permission, expiry=expiry,
            )
        elif self._credential is not None:
            key = await self._user_delegation_key(now, expiry)
            sas = generate_blob_sas(
                self._service.account_name or "", self.container, path,
                user_delegation_key=key, permission=permission, expiry=expiry,
                start=now - _CLOCK_SKEW,
            )
        else:
            return None
        return f"{self._client.get_blob_client(path).url}?{sas}"

    async def close(self) -> None:
        """Close the HTTP client, then the credential if there is one. Idempotent."""
        await self._service.close()
        if self._credential is not None:
            await self._credential.close()

    # --- internals -----------------------------------------------------------------------------

    async def _ensure_container(self, missing: Exception | None = None) -> None:
        """Create the container if allowed, else raise ConfigError (from ``missing``, the error
        that showed it absent)."""
        if not self._create_container:
            raise ConfigError(
                f"blob container {self.container!r} does not exist",
                hint="create it (Terraform does on Azure) or set PARLEY_BLOB_CREATE_CONTAINER=true",
            ) from missing
        with contextlib.suppress(ResourceExistsError):  # another writer was first
            await self._client.create_container()
        self._container_ready = True

    async def _user_delegation_key(self, now: datetime, expiry: datetime) -> UserDelegationKey:
        if self._delegation_key is None or self._delegation_key_expiry < expiry:
            key_expiry = max(expiry, now + _DELEGATION_KEY_LIFETIME)
            self._delegation_key = await self._service.get_user_delegation_key(
                now - _CLOCK_SKEW, key_expiry
            )
            self._delegation_key_expiry = key_expiry
        return self._delegation_key
