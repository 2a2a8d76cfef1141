"""Parse what arrives on the ingest queue into :class:`~parley.contracts.IngestRequest` values.

Accepted bodies (JSON): an Event Grid event in the EventGridEvent schema or the CloudEvents 1.0
schema, an array of either, a plain ``parley.ingest.v1`` request, or an array of those. Only
``Microsoft.Storage.BlobCreated`` and ``Microsoft.Storage.BlobDeleted`` matter; other event types
(and Event Grid's subscription validation event) are ignored, not failed. Container and blob path
come from ``subject`` (``/blobServices/default/containers/<c>/blobs/<path>``), the ETag is
stripped of quotes, and ``sequencer`` orders the events of one blob.

Also builds BlobCreated/BlobDeleted events in the EventGridEvent schema for the local stack, which
has no Event Grid (:func:`blob_event`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError

from parley.contracts import IngestRequest, loads, problems
from parley.errors import Reject

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
_ACTIONS = {BLOB_CREATED: "upsert", BLOB_DELETED: "delete"}
_SUBJECT_MARK = "/containers/"


def parse(body: bytes) -> list[IngestRequest]:
    """All ingest requests in one queue message, in the order given.

    Raises :class:`Reject` (reason ``malformed_message``) for bodies that are not JSON or not one
    of the accepted shapes, naming what is wrong."""
    try:
        document = loads(body)
    except ValueError as exc:  # undecodable, not JSON, or nested too deeply
        raise Reject(f"not JSON: {exc}", reason="malformed_message") from exc
    items = document if isinstance(document, list) else [document]
    requests: list[IngestRequest] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Reject(f"item {index} is not a JSON object", reason="malformed_message")
        request = _one(item, index)
        if request is not None:
            requests.append(request)
    return requests


def _one(item: Mapping[str, Any], index: int) -> IngestRequest | None:
    event_type = item.get("eventType") or item.get("type")
    if "schema" in item:
        try:
            return IngestRequest.model_validate(item)
        except ValidationError as exc:
            raise Reject(
                f"item {index}: invalid ingest request: {problems(exc)}", reason="malformed_message"
            ) from exc
    if not isinstance(event_type, str):
        raise Reject(
            f"item {index}: neither an Event Grid event (eventType/type) nor a parley.ingest.v1 "
            "request (schema)",
            reason="malformed_message",
        )
    action = _ACTIONS.get(event_type)
    if action is None:
        return None  # another event type, e.g. SubscriptionValidationEvent: not ours to fail
    data = item.get("data")
    subject = item.get("subject")
    if not isinstance(data, dict) or not isinstance(subject, str):
        raise Reject(
            f"item {index}: {event_type} without data or subject", reason="malformed_message"
        )
    container, path = subject_path(subject)
    etag = data.get("eTag")
    return IngestRequest(
        action=action,
        container=container,
        path=path,
        etag=strip_etag(etag) if isinstance(etag, str) else None,
        sequencer=data.get("sequencer") if isinstance(data.get("sequencer"), str) else None,
        content_type=data.get("contentType") if isinstance(data.get("contentType"), str) else None,
    )


def subject_path(subject: str) -> tuple[str, str]:
    """``/blobServices/default/containers/<c>/blobs/<path>`` -> (c, path). Raises Reject."""
    position = subject.find(_SUBJECT_MARK)
    rest = subject[position + len(_SUBJECT_MARK) :] if position >= 0 else ""
    container, sep, path = rest.partition("/blobs/")
    if position < 0 or not sep or not container or not path:
        raise Reject(f"subject is not a blob path: {subject!r}", reason="malformed_message")
    return container, unquote(path)


def strip_etag(etag: str) -> str:
    return etag.strip().removeprefix("W/").strip('"')


def latest(requests: Iterable[IngestRequest]) -> list[IngestRequest]:
    """Keep, per blob, only the newest request by ``sequencer`` (string order, as Azure
    documents); requests without a sequencer keep their arrival order after sequenced ones."""
    newest: dict[tuple[str | None, str], IngestRequest] = {}
    for request in requests:
        key = (request.container, request.path)
        seen = newest.get(key)
        if seen is None or sequenced_after(request.sequencer, seen.sequencer):
            newest[key] = request
    return list(newest.values())


def sequenced_after(candidate: str | None, current: str | None) -> bool:
    """True when an event with ``candidate`` sequencer supersedes one with ``current``.
    Sequencers are equal-length hex strings; compare by length first to be safe."""
    if candidate is None or current is None:
        return True
    return (len(candidate), candidate) > (len(current), current)


def blob_event(
    action: str,
    *,
    account: str,
    container: str,
    path: str,
    etag: str | None = None,
    size: int | None = None,
    content_type: str | None = None,
    sequencer: str | None = None,
) -> dict[str, Any]:
    """A BlobCreated (``action="upsert"``) or BlobDeleted event, EventGridEvent schema, as Event
    Grid would deliver it for a block blob."""
    event_type = BLOB_CREATED if action == "upsert" else BLOB_DELETED
    data: dict[str, Any] = {
        "api": "PutBlob" if action == "upsert" else "DeleteBlob",
        "requestId": str(uuid.uuid4()),
        "contentType": content_type or "application/octet-stream",
        "blobType": "BlockBlob",
        "url": f"https://{account}.blob.core.windows.net/{container}/{path}",
        "sequencer": sequencer or f"{int(datetime.now(UTC).timestamp() * 1e6):032x}",
        "storageDiagnostics": {"batchId": str(uuid.uuid4())},
    }
    if action == "upsert":
        data["eTag"] = f'"{etag}"' if etag else None
        data["contentLength"] = size or 0
    return {
        "topic": f"/subscriptions/local/resourceGroups/local/providers/Microsoft.Storage/"
        f"storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{path}",
        "eventType": event_type,
        "eventTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "id": str(uuid.uuid4()),
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
    }

