"""The blob store seam: Azure Blob Storage on Azure (and Azurite locally; the adapter is
:mod:`backends.azure_blob`), or a directory (:mod:`parley.blobstore.local`).

Paths are ``/``-separated and relative to the configured container. By convention the first
segment of a path is the tenant (``acme/reports/q3.pdf``); a path with one segment belongs to the
default tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Protocol, runtime_checkable

#: Size of the blocks a store reads and writes when streaming a blob to or from a file.
BLOCK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class BlobInfo:
    path: str
    etag: str  # without quotes
    size: int
    content_type: str | None = None
    last_modified: float | None = None  # unix time
    metadata: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class BlobStore(Protocol):
    container: str

    async def put(
        self,
        path: str,
        data: bytes | IO[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Create or replace the blob from bytes, or from a binary file read (in blocks, never
        whole) from its current position to its end; returns its new properties."""
        ...

    async def get(self, path: str) -> tuple[bytes, BlobInfo]:
        """The blob's bytes and properties. Raises :class:`parley.errors.NotFound`. Holds the
        whole blob in memory: for untrusted sizes use :meth:`download`."""
        ...

    async def download(self, path: str, into: IO[bytes], *, max_bytes: int) -> BlobInfo:
        """Write the blob's bytes into ``into`` block by block, never holding it whole; returns
        the properties of the bytes written. Its size is read from its properties first: over
        ``max_bytes`` raises :class:`parley.errors.TooLarge` before a byte is read (as does a
        blob that grows past it while being read). Raises :class:`parley.errors.NotFound`."""
        ...

    async def stat(self, path: str) -> BlobInfo | None:
        """Properties, or None when there is no such blob."""
        ...

    async def delete(self, path: str) -> bool:
        """Remove the blob; False when it was not there."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob whose path starts with ``prefix``, in path order."""
        ...

    async def upload_url(
        self, path: str, *, ttl_seconds: int, content_type: str | None = None
    ) -> str | None:
        """A URL a client can PUT this one blob to directly (write-only, expires after
        ``ttl_seconds``), or None when the store cannot hand one out: then the caller takes
        the upload itself and calls :meth:`put`."""
        ...

    async def close(self) -> None: ...
