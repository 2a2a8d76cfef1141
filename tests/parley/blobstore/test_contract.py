"""The BlobStore contract, run against every adapter (a directory and Azurite)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile

import pytest

from parley.blobstore import BlobInfo, BlobStore
from parley.blobstore.local import LocalBlobStore
from parley.errors import NotFound, Reject, TooLarge

UNICODE_NAME = "Отчёт 2024 — «final» 📄 100% done?.pdf"

HOSTILE_PATHS = [
    "",
    "/etc/passwd",
    "../escape.txt",
    "a/../../escape.txt",
    "a/./b",
    ".",
    "..",
    "a//b",
    "a/",
    "..\\escape.txt",
    "a\\b",
    "nul\x00byte",
    "line\nbreak",
    "x" * 251,
    "é" * 126,  # 252 bytes in UTF-8
    "a/" * 300 + "b",
    "d/" * 600,
]


async def collect(store: BlobStore, prefix: str = "") -> list[BlobInfo]:
    return [info async for info in store.list(prefix)]


async def test_put_get_stat_round_trip(store: BlobStore) -> None:
    put = await store.put(
        "acme/reports/q3.pdf", b"%PDF-1.7 body", content_type="application/pdf",
        metadata={"filename": "q3.pdf", "tenant": "acme"},
    )
    assert put.etag and '"' not in put.etag
    assert put.size == len(b"%PDF-1.7 body")

    data, info = await store.get("acme/reports/q3.pdf")
    assert data == b"%PDF-1.7 body"
    stat = await store.stat("acme/reports/q3.pdf")
    assert stat is not None
    for seen in (info, stat):
        assert seen.path == "acme/reports/q3.pdf"
        assert seen.etag == put.etag
        assert seen.size == put.size
        assert seen.content_type == "application/pdf"
        assert dict(seen.metadata) == {"filename": "q3.pdf", "tenant": "acme"}
        assert seen.last_modified is not None and seen.last_modified > 1.6e9


async def test_default_content_type_is_octet_stream(store: BlobStore) -> None:
    await store.put("plain", b"x")
    stat = await store.stat("plain")
    assert stat is not None and stat.content_type == "application/octet-stream"


async def test_replace_changes_etag_and_content(store: BlobStore) -> None:
    first = await store.put("doc.txt", b"one", metadata={"v": "1"})
    second = await store.put("doc.txt", b"two!", metadata={"v": "2"})
    assert second.etag != first.etag
    data, info = await store.get("doc.txt")
    assert (data, info.etag, info.size) == (b"two!", second.etag, 4)
    assert dict(info.metadata) == {"v": "2"}


async def test_same_content_etag(store: BlobStore) -> None:
    first = await store.put("same.txt", b"identical")
    second = await store.put("same.txt", b"identical")
    if isinstance(store, LocalBlobStore):
        assert second.etag == first.etag == hashlib.sha256(b"identical").hexdigest()
    else:  # Azure: a new ETag per write, whatever the bytes
        assert second.etag != first.etag
    stat = await store.stat("same.txt")
    assert stat is not None and stat.etag == second.etag


async def test_unicode_filename_and_metadata_round_trip(store: BlobStore) -> None:
    metadata = {
        "filename": UNICODE_NAME,
        "note": "  spaces, tabs\tand %41 literal percent  ",
        "Uploader_2": "zoë@example.com",
    }
    path = f"acme/{UNICODE_NAME}"
    await store.put(path, b"data", metadata=metadata)
    _, got = await store.get(path)
    stat = await store.stat(path)
    listed = await collect(store, "acme/")
    assert dict(got.metadata) == metadata
    assert stat is not None and dict(stat.metadata) == metadata
    assert [info.path for info in listed] == [path]
    assert dict(listed[0].metadata) == metadata


async def test_missing_blob(store: BlobStore) -> None:
    with pytest.raises(NotFound):
        await store.get("nope/missing.pdf")
    assert await store.stat("nope/missing.pdf") is None
    assert await store.delete("nope/missing.pdf") is False
    assert await collect(store) == []


async def test_delete(store: BlobStore) -> None:
    await store.put("folder/doc.txt", b"x")
    assert await store.delete("folder/doc.txt") is True
    assert await store.stat("folder/doc.txt") is None
    with pytest.raises(NotFound):
        await store.get("folder/doc.txt")
    assert await store.delete("folder/doc.txt") is False
    # The emptied "folder" does not block a blob of that name.
    await store.put("folder", b"now a blob")
    assert (await store.get("folder"))[0] == b"now a blob"


async def test_list_prefix_and_order(store: BlobStore) -> None:
    paths = ["b/1", "a/2", "ab", "a-c", "a/1", "a/sub/x", "z"]
    for path in paths:
        await store.put(path, path.encode())
    assert [i.path for i in await collect(store)] == sorted(paths)
    assert [i.path for i in await collect(store, "a/")] == ["a/1", "a/2", "a/sub/x"]
    assert [i.path for i in await collect(store, "a")] == ["a-c", "a/1", "a/2", "a/sub/x", "ab"]
    assert [i.path for i in await collect(store, "a/s")] == ["a/sub/x"]
    assert await collect(store, "q") == []
    listed = {i.path: i for i in await collect(store)}
    assert listed["b/1"].size == 3
    stat = await store.stat("b/1")
    assert stat is not None and listed["b/1"].etag == stat.etag


async def test_list_many_blobs(store: BlobStore) -> None:
    paths = [f"many/{i:04d}.txt" for i in range(300)]
    semaphore = asyncio.Semaphore(16)

    async def put(path: str) -> None:
        async with semaphore:
            await store.put(path, path.encode())

    await asyncio.gather(*(put(path) for path in paths))
    listed = await collect(store, "many/")
    assert [info.path for info in listed] == paths
    assert all(info.size == len(info.path) for info in listed)


async def test_large_blob(store: BlobStore) -> None:
    data = os.urandom(20 * 1024 * 1024)
    put = await store.put("big.bin", data)
    got, info = await store.get("big.bin")
    assert len(got) == len(data) and got == data
    assert info.size == len(data) and info.etag == put.etag


async def test_put_from_a_file_and_download_into_one(store: BlobStore) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)  # several blocks, the last one short
    with tempfile.TemporaryFile() as source:
        source.write(b"skipped" + data)
        source.seek(len(b"skipped"))  # a file is read from where it stands
        put = await store.put("acme/file.bin", source, metadata={"filename": "f.bin"})
    assert put.size == len(data)
    with tempfile.TemporaryFile() as into:
        info = await store.download("acme/file.bin", into, max_bytes=len(data))
        into.seek(0)
        assert hashlib.sha256(into.read()).digest() == hashlib.sha256(data).digest()
    assert (info.etag, info.size) == (put.etag, len(data))
    assert dict(info.metadata) == {"filename": "f.bin"}
    with pytest.raises(NotFound):
        await store.download("acme/none.bin", io.BytesIO(), max_bytes=10)


async def test_download_over_the_limit_reads_nothing(store: BlobStore) -> None:
    """The size comes from the blob's properties: a blob over the limit is refused before a
    byte is written (on Azure, before its download starts)."""
    await store.put("acme/big.bin", b"x" * 5000)
    into = io.BytesIO()
    with pytest.raises(TooLarge) as caught:
        await store.download("acme/big.bin", into, max_bytes=4999)
    assert into.getvalue() == b""
    assert (caught.value.size, caught.value.limit) == (5000, 4999)
    assert caught.value.reason == "too_large"


async def test_odd_but_valid_names_stay_literal(store: BlobStore) -> None:
    names = ["%2e%2e/x", "a b/c#d?e&f=g", "...", "trailing.", ".hidden", "-dash", "~tilde"]
    for name in names:
        await store.put(name, name.encode())
    for name in names:
        assert (await store.get(name))[0] == name.encode()
    assert sorted(i.path for i in await collect(store)) == sorted(names)


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=range(len(HOSTILE_PATHS)))
async def test_hostile_paths_are_rejected(store: BlobStore, path: str) -> None:
    with pytest.raises(Reject):
        await store.put(path, b"x")
    with pytest.raises(Reject):
        await store.get(path)
    with pytest.raises(Reject):
        await store.stat(path)
    with pytest.raises(Reject):
        await store.delete(path)
    with pytest.raises(Reject):
        await store.upload_url(path, ttl_seconds=60)
    assert await collect(store) == []


async def test_bad_metadata_is_rejected(store: BlobStore) -> None:
    for metadata in ({"file-name": "x"}, {"1st": "x"}, {"naïve": "x"}, {"a": "x", "A": "y"}):
        with pytest.raises(Reject):
            await store.put("doc", b"x", metadata=metadata)
    with pytest.raises(Reject):
        await store.put("doc", b"x", metadata={"big": "é" * 3000})  # 18 KB encoded
    assert await store.stat("doc") is None


async def test_upload_url_kind(store: BlobStore) -> None:
    url = await store.upload_url("acme/up.pdf", ttl_seconds=60, content_type="application/pdf")
    if isinstance(store, LocalBlobStore):
        assert url is None
    else:
        assert url is not None and url.startswith("http") and "sig=" in url
