"""Event Grid parsing: the sample events of Azure's documentation (both schemas), arrays,
plain requests, ordering by sequencer, and malformed bodies."""

from __future__ import annotations

import json

import pytest

from ingest_worker import events
from parley.contracts import IngestRequest
from parley.errors import Reject
from parley.ids import TenantId

# From "Azure Blob Storage as an Event Grid source" (EventGridEvent schema), unchanged.
EVENT_GRID_CREATED = {
    "topic": "/subscriptions/{subscription-id}/resourceGroups/Storage/providers/"
    "Microsoft.Storage/storageAccounts/my-storage-account",
    "subject": "/blobServices/default/containers/test-container/blobs/new-file.txt",
    "eventType": "Microsoft.Storage.BlobCreated",
    "eventTime": "2017-06-26T18:41:00.9584103Z",
    "id": "831e1650-001e-001b-66ab-eeb76e069631",
    "data": {
        "api": "PutBlockList",
        "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
        "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
        "eTag": '"0x8D4BCC2E4835CD0"',
        "contentType": "text/plain",
        "contentLength": 524288,
        "blobType": "BlockBlob",
        "url": "https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt",
        "sequencer": "00000000000004420000000000028963",
        "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
    },
    "dataVersion": "",
    "metadataVersion": "1",
}
EVENT_GRID_DELETED = {
    "topic": "/subscriptions/{subscription-id}/resourceGroups/Storage/providers/"
    "Microsoft.Storage/storageAccounts/my-storage-account",
    "subject": "/blobServices/default/containers/testcontainer/blobs/file-to-delete.txt",
    "eventType": "Microsoft.Storage.BlobDeleted",
    "eventTime": "2017-11-07T20:09:22.5674003Z",
    "id": "4c2359fe-001e-00ba-0e04-58586806d298",
    "data": {
        "api": "DeleteBlob",
        "requestId": "4c2359fe-001e-00ba-0e04-585868000000",
        "contentType": "text/plain",
        "blobType": "BlockBlob",
        "url": "https://my-storage-account.blob.core.windows.net/testcontainer/file-to-delete.txt",
        "sequencer": "0000000000000281000000000002F5CA",
        "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
    },
    "dataVersion": "",
    "metadataVersion": "1",
}
# From "CloudEvents v1.0 schema with Azure Event Grid": note the subject without a leading slash
# and the ETag without quotes.
CLOUD_EVENT_CREATED = {
    "specversion": "1.0",
    "type": "Microsoft.Storage.BlobCreated",
    "source": "/subscriptions/{subscription-id}/resourceGroups/{resource-group}/providers/"
    "Microsoft.Storage/storageAccounts/{storage-account}",
    "id": "9aeb0fdf-c01e-0131-0922-9eb54906e209",
    "time": "2019-11-18T15:13:39.4589254Z",
    "subject": "blobServices/default/containers/{storage-container}/blobs/{new-file}",
    "data": {
        "api": "PutBlockList",
        "clientRequestId": "4c5dd7fb-2c48-4a27-bb30-5361b5de920a",
        "requestId": "9aeb0fdf-c01e-0131-0922-9eb549000000",
        "eTag": "0x8D76C39E4407333",
        "contentType": "image/png",
        "contentLength": 30699,
        "blobType": "BlockBlob",
        "url": "https://gridtesting.blob.core.windows.net/testcontainer/{new-file}",
        "sequencer": "000000000000000000000000000099240000000000c41c18",
        "storageDiagnostics": {"batchId": "681fe319-3006-00a8-0022-9e7cde000000"},
    },
}


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def test_event_grid_schema_created_and_deleted() -> None:
    created, deleted = events.parse(body([EVENT_GRID_CREATED, EVENT_GRID_DELETED]))
    assert created.action == "upsert"
    assert created.container == "test-container"
    assert created.path == "new-file.txt"
    assert created.etag == "0x8D4BCC2E4835CD0"  # quotes stripped
    assert created.sequencer == "00000000000004420000000000028963"
    assert created.content_type == "text/plain"
    assert deleted.action == "delete"
    assert deleted.path == "file-to-delete.txt"
    assert deleted.etag is None


def test_cloud_events_schema_single_event() -> None:
    [request] = events.parse(body(CLOUD_EVENT_CREATED))
    assert request.action == "upsert"
    assert request.container == "{storage-container}"
    assert request.path == "{new-file}"
    assert request.etag == "0x8D76C39E4407333"


def test_nested_path_and_percent_encoding() -> None:
    event = dict(EVENT_GRID_CREATED)
    event["subject"] = "/blobServices/default/containers/docs/blobs/acme/q3%20report.pdf"
    [request] = events.parse(body(event))
    assert request.path == "acme/q3 report.pdf"


def test_plain_request_and_array_of_requests() -> None:
    one = {"schema": "parley.ingest.v1", "path": "acme/a.pdf", "tenant": "acme"}
    [request] = events.parse(body(one))
    assert request == IngestRequest(path="acme/a.pdf", tenant=TenantId("acme"))
    two = events.parse(body([one, {**one, "action": "delete", "path": "acme/b.pdf"}]))
    assert [r.action for r in two] == ["upsert", "delete"]


def test_other_event_types_are_ignored_not_failed() -> None:
    validation = {
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": "/subscriptions/x",
        "subject": "",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2018-01-25T22:12:19.4556811Z",
        "metadataVersion": "1",
        "dataVersion": "1",
    }
    assert events.parse(body([validation])) == []


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 20_000, "nested too deeply"),  # json raises RecursionError on this
        (b'{"eventType": ' + b"[" * 20_000, "nested too deeply"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"hello": "world"}', "neither an Event Grid event"),
        (body({"schema": "parley.ingest.v1"}), "path"),
        (body({"schema": "parley.ingest.v2", "path": "a.pdf"}), "schema"),
        (body({**EVENT_GRID_CREATED, "subject": "/nonsense"}), "not a blob path"),
        (body({**EVENT_GRID_CREATED, "data": None}), "without data"),
    ],
)
def test_malformed_bodies_are_rejected_with_a_reason(raw: bytes, says: str) -> None:
    with pytest.raises(Reject) as caught:
        events.parse(raw)
    assert caught.value.reason == "malformed_message"
    assert says in str(caught.value)


def test_latest_keeps_newest_event_per_blob_by_sequencer() -> None:
    older = IngestRequest(path="a.pdf", sequencer="0000000000000001", action="delete")
    newer = IngestRequest(path="a.pdf", sequencer="0000000000000002")
    other = IngestRequest(path="b.pdf", sequencer="0000000000000001")
    assert events.latest([newer, other, older]) == [newer, other]
    assert events.latest([older, newer]) == [newer]
    # Duplicates (Event Grid delivers at least once) collapse to one.
    assert events.latest([newer, newer]) == [newer]


def test_sequenced_after() -> None:
    assert events.sequenced_after("0002", "0001")
    assert not events.sequenced_after("0001", "0002")
    assert not events.sequenced_after("0001", "0001")
    assert events.sequenced_after(None, "0001")
    assert events.sequenced_after("10000", "9999")  # longer means later


def test_blob_event_round_trips_through_parse() -> None:
    event = events.blob_event(
        "upsert", account="local", container="documents", path="acme/x.pdf", etag="abc", size=3
    )
    [request] = events.parse(body([event]))
    assert (request.action, request.container, request.path, request.etag) == (
        "upsert",
        "documents",
        "acme/x.pdf",
        "abc",
    )
    gone = events.blob_event("delete", account="local", container="documents", path="acme/x.pdf")
    assert events.parse(body(gone))[0].action == "delete"
