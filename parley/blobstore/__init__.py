"""The blob store seam: Azure Blob Storage on Azure (and Azurite locally), or a directory.

Paths are ``/``-separated and relative to the configured container. By convention the first
segment of a path is the tenant (``acme/reports/q3.pdf``); a path with one segment belongs to the
default tenant.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


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
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Create or replace the blob; returns its new ETag."""
        ...

    async def get(self, path: str) -> tuple[bytes, BlobInfo]:
        """The blob's bytes and properties. Raises :class:`parley.errors.NotFound`."""
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
