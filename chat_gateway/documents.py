"""The portal's document API on the gateway, authenticated with ``Authorization: Bearer`` (a
header only, never ``?token=``; the tenant comes from the token).

- ``GET /api/documents``: the tenant's documents (status records) and the upload limits
  (size, types, how many uploads the portal may send at once).
- ``POST /api/documents?name=FILE``: one file per request, the body is the file's bytes,
  streamed to a temporary file as it arrives (never held whole in memory). Size limited on the
  server (``settings.max_upload_bytes``: 413 the moment the body passes it), at most
  ``max_concurrent_uploads`` at once per replica and ``max_tenant_concurrent_uploads`` per
  tenant (429 ``too_many_uploads`` with Retry-After), type checked by its bytes (PDF, DOCX,
  PPTX, XLSX, HTML, Markdown or text: :mod:`parley.filetypes`; 415 with what the file looks
  like instead); the name is untrusted (made safe by
  :func:`parley.uploads.safe_name`, its extension set from the detected type). Stored, announced
  on the ingest queue and shown ``queued`` at once: 201.
- ``POST /api/uploads`` ``{"name", "size"}``: where to send a file. With an Azure blob store, a
  write-only SAS URL for that one blob (15 minutes) and the commit call to make after the PUT;
  with a store that cannot hand out URLs (the local folder), the gateway route above.
- ``POST /api/documents/commit`` ``{"path", "name"}``: announce a blob the client PUT through a
  SAS URL. Its size is checked again (a SAS cannot enforce it: over the limit, the blob is
  deleted, 413); its type is checked by the ingest worker, which sniffs the bytes and marks
  anything it cannot read ``failed`` (``unsupported_type``).
- ``DELETE /api/documents/{id}``: delete the blob and post a delete request; the ingest worker
  removes the chunks and the status record (a ``deleted`` document event follows): 202.
- ``POST /api/documents/{id}/retry``: post the ingest request of a ``failed`` document again: 202.

Errors are ``{"error": {"code", "message", "hint"?}}`` with a message a person can act on.
"""

from __future__ import annotations

import asyncio
import io
import posixpath
import re
import tempfile
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

import structlog
from starlette.routing import BaseRoute

from backends.clients import Brokers
from chat_gateway.auth import AuthError, Principal, bearer
from chat_gateway.services import Host, Services
from chat_gateway.web import BodyTooLarge, ClientGone, Request, json_response, route
from parley.blobstore import BlobStore
from parley.blobstore.names import check_path
from parley.broker import Broker
from parley.contracts import IngestRequest, loads
from parley.errors import ParleyError, Reject
from parley.filetypes import EXTENSIONS as FILE_EXTENSIONS
from parley.filetypes import FileKind, UnsupportedType
from parley.filetypes import detect as detect_kind
from parley.ids import DocumentId, TenantId, document_id, path_tenant
from parley.status import DocumentStatus, Stage
from parley.uploads import CONTENT_TYPES, announce, blob_path, post_ingest, safe_name, upload

log = structlog.get_logger(__name__)

Kind = FileKind
#: Every extension an uploaded file may keep (the first of each kind is the one it is given).
EXTENSIONS: dict[Kind, str] = {kind: names[0] for kind, names in FILE_EXTENSIONS.items()}
UPLOAD_URL_SECONDS = 15 * 60
# An upload's first bytes stay in memory, the rest goes to a temporary file.
SPOOL_BYTES = 1024 * 1024
BUSY_RETRY_SECONDS = 5
JSON_LIMIT = 16 * 1024
_DOCUMENT_ID = re.compile(r"^[0-9a-f]{24}$")


class Rejected(ParleyError):
    """An upload refused by the type check; ``reason`` is the error code sent to the client."""


# --- pure checks ------------------------------------------------------------------------------


def detect(data: bytes | IO[bytes]) -> Kind:
    """The kind of document the bytes are (:func:`parley.filetypes.detect`: PDF, DOCX, PPTX,
    XLSX, HTML, Markdown, text; never the name), else :class:`Rejected` saying what the file
    looks like. An encrypted Office file is accepted: the ingest worker reports it as
    ``encrypted``, which tells the user more. A file is read from its start, only as far as
    needed (a ZIP's directory is read where it lies)."""
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    file.seek(0)
    empty = not file.read(1)
    file.seek(0)
    if empty:
        raise Rejected("the file is empty (0 bytes)", reason="empty")
    try:
        return detect_kind(file)
    except UnsupportedType as exc:
        raise Rejected(exc.message, reason="unsupported_type", hint=exc.hint) from None


def named(name: str, kind: Kind) -> str:
    """The name to show and store: :func:`display_name` with an extension of what the bytes
    are (a PDF called ``report`` becomes ``report.pdf``; ``notes.docx`` holding a PDF
    ``notes.pdf``; ``data.csv`` holding text stays ``data.csv``). Raises Reject
    (``bad_filename``) when nothing usable is left; the blob path is made from it by
    :func:`parley.uploads.blob_path` (:func:`~parley.uploads.safe_name`)."""
    shown = display_name(name)
    stem, ext = posixpath.splitext(shown)
    if ext.lower() in FILE_EXTENSIONS[kind]:
        shown = stem + ext.lower()
    else:
        if ext.lower() in _KNOWN_EXTENSIONS:
            shown = stem  # the extension of another kind: replaced, not kept before the right one
        stem = shown
        shown += EXTENSIONS[kind]
    if not stem.strip(" ._"):
        raise Reject(f"unusable file name {name!r}", reason="bad_filename",
                     hint="rename the file and upload it again")
    safe_name(shown)
    return shown


_KNOWN_EXTENSIONS = frozenset(e for names in FILE_EXTENSIONS.values() for e in names)


def display_name(name: str) -> str:
    """The name as the user gave it, for display only: no directories or control characters,
    at most 255 characters. (The portal renders it as text, never as HTML.)"""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable()).strip()
    return cleaned[:255]


def mib(size: int) -> str:
    """A size for people: ``512 KiB``, ``2.5 MiB``, ``100 MiB``."""
    if size < 2**20:
        return f"{size / 1024:.0f} KiB"
    return f"{size / 2**20:.1f} MiB" if size < 10 * 2**20 else f"{size / 2**20:.0f} MiB"


@dataclass
class UploadSlots:
    """Uploads through this replica at once, per tenant and in all: a slot is taken before the
    body is read, so a flood of uploads is refused (429) instead of filling the disk. Pure."""

    per_tenant: int
    total: int
    _tenants: Counter[str] = field(default_factory=Counter)

    @property
    def running(self) -> int:
        return sum(self._tenants.values())

    def take(self, tenant: str) -> bool:
        if self.running >= self.total or self._tenants[tenant] >= self.per_tenant:
            return False
        self._tenants[tenant] += 1
        return True

    def give_back(self, tenant: str) -> None:
        self._tenants[tenant] -= 1
        if self._tenants[tenant] <= 0:
            del self._tenants[tenant]


# --- the HTTP layer ---------------------------------------------------------------------------

Handler = Callable[[Request, Principal], Awaitable[None]]


@dataclass
class Documents:
    """The routes above, on one gateway. The blob store and the ingest queue's broker are
    opened from the gateway's settings on first use and closed by :meth:`close`."""

    gateway: Host
    _blobs: BlobStore | None = None
    _brokers: Brokers | None = None
    _slots: UploadSlots | None = None

    @property
    def services(self) -> Services:
        return self.gateway.services

    @property
    def slots(self) -> UploadSlots:
        if self._slots is None:
            settings = self.gateway.settings
            self._slots = UploadSlots(per_tenant=settings.max_tenant_concurrent_uploads,
                                      total=settings.max_concurrent_uploads)
        return self._slots

    @property
    def blobs(self) -> BlobStore:
        if self._blobs is None:
            from backends.factory import open_blob_store

            self._blobs = open_blob_store(self.gateway.settings)
        return self._blobs

    def routes(self) -> list[BaseRoute]:
        # {rest:path}: any sub-path reaches the handler (after authentication), which answers
        # 404 unless it names a document.
        return [
            route("/api/documents", GET=self._authed(self.list), POST=self._authed(self.upload)),
            route("/api/uploads", POST=self._authed(self.upload_target)),
            route("/api/documents/commit", POST=self._authed(self.commit)),
            route("/api/documents/{rest:path}", DELETE=self._authed(self.delete),
                  POST=self._authed(self.retry)),
        ]

    async def close(self) -> None:
        if self._brokers is not None:
            await self._brokers.close()
            self._brokers = None
        if self._blobs is not None:
            await self._blobs.close()
            self._blobs = None

    def _broker(self) -> Broker:
        if self._brokers is None:
            self._brokers = Brokers(self.gateway.settings, self.services.redis)
        return self._brokers.for_queue(self.gateway.settings.queues.ingest)

    def _authed(self, handler: Handler) -> Callable[[Request], Awaitable[None]]:
        async def handle(request: Request) -> None:
            # A header only: every client of this API can send one (?token= would end up in
            # access logs and browser history).
            token = bearer(request.headers, {})
            try:
                principal = await self.services.auth.authenticate(token)
            except AuthError as exc:
                await error(request, 401, "unauthenticated", exc.message, hint=exc.hint,
                            headers=[("www-authenticate", "Bearer")])
                return
            try:
                await handler(request, principal)
            except BodyTooLarge:
                limit = self.gateway.settings.max_upload_bytes
                await error(request, 413, "too_large", f"the file is over the {mib(limit)} limit",
                            hint="split it or upload a smaller file")
            except ClientGone:
                log.info("upload_abandoned", path=request.path)
            except Reject as exc:  # an unusable file name or path
                await error(request, 400, exc.reason, exc.message, hint=exc.hint)
            except ParleyError as exc:
                log.warning("documents_api_failed", error=str(exc))
                await error(request, 503, exc.reason, exc.message, hint=exc.hint)

        return handle

    # routes -----------------------------------------------------------------------------------
    async def list(self, request: Request, principal: Principal) -> None:
        documents = await self.services.status.documents(principal.tenant)
        settings = self.gateway.settings
        await json_response(request, 200, {
            "tenant": principal.tenant,
            "documents": [public(d) for d in documents if d.stage != Stage.DELETED],
            "limits": {"max_upload_bytes": settings.max_upload_bytes,
                       "extensions": list(EXTENSIONS.values()),
                       # The portal sends no more at once than one tenant may (429 beyond).
                       "concurrent_uploads": min(settings.max_tenant_concurrent_uploads,
                                                 settings.max_concurrent_uploads)},
        })

    async def upload(self, request: Request, principal: Principal) -> None:
        name = request.query.get("name", "")
        if not name.strip():
            await error(request, 400, "bad_request", "the file name is missing",
                        hint="POST /api/documents?name=<file name> with the file as the body")
            return
        shown = display_name(name) or "file"
        slots = self.slots
        if not slots.take(principal.tenant):
            log.info("upload_refused_busy", tenant=principal.tenant, running=slots.running)
            await error(request, 429, "too_many_uploads",
                        f"{shown}: too many uploads at once; it was not stored",
                        hint="wait for the others to finish, then upload it again",
                        headers=[("retry-after", str(BUSY_RETRY_SECONDS))])
            return
        try:
            await self._upload(request, principal, name, shown)
        finally:
            slots.give_back(principal.tenant)

    async def _upload(self, request: Request, principal: Principal, name: str, shown: str
                      ) -> None:
        settings = self.gateway.settings
        # The body goes to a temporary file as it arrives (memory only for its first MiB) and
        # is refused the moment it passes the limit: an upload is never held whole in memory.
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as file:
            try:
                async for chunk in request.stream(settings.max_upload_bytes):
                    file.write(chunk)
            except BodyTooLarge:
                await error(request, 413, "too_large",
                            f"{shown}: over the {mib(settings.max_upload_bytes)} upload limit",
                            hint="split it or upload a smaller file")
                return
            size = file.tell()
            try:
                kind = await asyncio.to_thread(detect, file)
            except Rejected as exc:
                status = 400 if exc.reason == "empty" else 415
                await error(request, status, exc.reason, f"{shown}: {exc.message}",
                            hint=exc.hint)
                return
            file.seek(0)
            ingest, _info = await upload(
                settings, blobs=self.blobs, broker=self._broker(), tenant=principal.tenant,
                filename=named(name, kind), data=file, redis=self.services.redis,
                status=self.services.status,
            )
        document = document_id(principal.tenant, ingest.path)
        record = await self._record(principal.tenant, document)
        log.info("document_uploaded", document_id=document, bytes=size, kind=kind)
        await json_response(request, 201, {"document": public(record), "path": ingest.path})

    async def upload_target(self, request: Request, principal: Principal) -> None:
        body = await _json_body(request)
        name, size = body.get("name"), body.get("size")
        if not isinstance(name, str) or not isinstance(size, int) or size < 0:
            await error(request, 400, "bad_request",
                        'send {"name": "<file name>", "size": <bytes>}')
            return
        limit = self.gateway.settings.max_upload_bytes
        if size > limit:
            await error(request, 413, "too_large",
                        f"{display_name(name)}: {mib(size)} is over the {mib(limit)} upload limit",
                        hint="split it or upload a smaller file")
            return
        direct = {"method": "gateway",
                  "url": "/api/documents?name=" + urllib.parse.quote(name, safe="")}
        extension = posixpath.splitext(name)[1].lower()
        if extension not in CONTENT_TYPES:
            # Without an extension we cannot name the blob before seeing its bytes: the gateway
            # takes this one and decides by content.
            await json_response(request, 200, direct)
            return
        path = blob_path(principal.tenant, name)
        content_type = CONTENT_TYPES[extension]
        url = await self.blobs.upload_url(path, ttl_seconds=UPLOAD_URL_SECONDS,
                                          content_type=content_type)
        if url is None:
            await json_response(request, 200, direct)
            return
        await json_response(request, 200, {
            "method": "sas", "url": url, "path": path, "expires_in": UPLOAD_URL_SECONDS,
            "headers": {"x-ms-blob-type": "BlockBlob", "x-ms-blob-content-type": content_type},
            "commit": {"url": "/api/documents/commit",
                       "body": {"path": path, "name": display_name(name)}},
        })

    async def commit(self, request: Request, principal: Principal) -> None:
        body = await _json_body(request)
        path, name = body.get("path"), body.get("name")
        if not isinstance(path, str) or not path.startswith(f"{principal.tenant}/"):
            await error(request, 400, "bad_request", "the path is not one of your uploads",
                        hint="commit the path /api/uploads returned")
            return
        check_path(path)
        info = await self.blobs.stat(path)
        if info is None:
            await error(request, 404, "not_found", "nothing was uploaded to that path",
                        hint="PUT the file to the upload URL first (it expires)")
            return
        limit = self.gateway.settings.max_upload_bytes
        if info.size > limit:
            await self.blobs.delete(path)
            await error(request, 413, "too_large",
                        f"the upload is {mib(info.size)}, over the {mib(limit)} limit; "
                        "it was deleted", hint="split it or upload a smaller file")
            return
        filename = display_name(name) if isinstance(name, str) and name.strip() else ""
        await announce(
            self.gateway.settings, broker=self._broker(), tenant=principal.tenant, path=path,
            etag=info.etag, filename=filename or posixpath.basename(path),
            redis=self.services.redis, status=self.services.status,
        )
        record = await self._record(principal.tenant, document_id(principal.tenant, path))
        await json_response(request, 201, {"document": public(record), "path": path})

    async def delete(self, request: Request, principal: Principal) -> None:
        current = await self._addressed(request, principal, suffix="")
        if current is None:
            return
        settings = self.gateway.settings
        status = self.services.status
        record = await status.update(principal.tenant, current.document_id,
                                     message="being deleted")
        await self.blobs.delete(current.path)
        removal = IngestRequest(action="delete", container=settings.blob_container,
                                path=current.path, tenant=principal.tenant)
        await post_ingest(settings, self._broker(), removal, redis=self.services.redis)
        log.info("document_delete_requested", document_id=current.document_id)
        await json_response(request, 202, {"document": public(record)})

    async def retry(self, request: Request, principal: Principal) -> None:
        current = await self._addressed(request, principal, suffix="/retry")
        if current is None:
            return
        if current.stage != Stage.FAILED:
            await error(request, 409, "conflict",
                        f"{current.filename} is {current.stage.value}: only a failed document "
                        "can be retried")
            return
        info = await self.blobs.stat(current.path)
        if info is None:
            await error(request, 410, "gone", f"{current.filename} is no longer stored",
                        hint="upload it again")
            return
        await announce(
            self.gateway.settings, broker=self._broker(), tenant=principal.tenant,
            path=current.path, etag=info.etag, filename=current.filename,
            redis=self.services.redis, status=self.services.status,
        )
        record = await self._record(principal.tenant, current.document_id)
        log.info("document_retry_requested", document_id=current.document_id)
        await json_response(request, 202, {"document": public(record)})

    # helpers ----------------------------------------------------------------------------------
    async def _addressed(
        self, request: Request, principal: Principal, *, suffix: str
    ) -> DocumentStatus | None:
        """The document named by the path's ``{id}`` (+ ``suffix``), or None after answering
        404 (unknown id, another tenant's document, or an unknown sub-path). A record whose
        stored path is not under the tenant's prefix is answered 404 too: whatever wrote it,
        deleting or re-posting through it would act on another tenant's blob."""
        rest = str(request.path_params.get("rest", ""))
        raw = rest[: -len(suffix)] if suffix and rest.endswith(suffix) else rest
        if (suffix and not rest.endswith(suffix)) or not _DOCUMENT_ID.match(raw):
            await error(request, 404, "not_found", f"no route {request.path}")
            return None
        current = await self.services.status.get(principal.tenant, DocumentId(raw))
        if current is None or not current.path:
            await error(request, 404, "not_found", "no such document",
                        hint="it may have been deleted; reload the list")
            return None
        owner = path_tenant(current.path, self.gateway.settings.default_tenant)
        if owner != principal.tenant:
            log.warning("foreign_path_refused", document_id=current.document_id,
                        tenant=principal.tenant, path_tenant=owner)
            await error(request, 404, "not_found", "no such document")
            return None
        return current

    async def _record(self, tenant: TenantId, document: DocumentId) -> DocumentStatus:
        record = await self.services.status.get(tenant, document)
        if record is None:  # deleted in between: report what was asked for
            return DocumentStatus(document_id=document, tenant=tenant, stage=Stage.DELETED)
        return record


def public(status: DocumentStatus) -> dict[str, Any]:
    """A status record as the portal gets it (the same fields as the websocket's document
    events, without the internal version bookkeeping)."""
    return status.model_dump(mode="json", exclude={"pending_version", "sequencer", "etag"})


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        data = loads(await request.body(JSON_LIMIT))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def error(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    hint: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    body: dict[str, Any] = {"code": code, "message": message}
    if hint:
        body["hint"] = hint
    await json_response(request, status, {"error": body}, headers or [])
