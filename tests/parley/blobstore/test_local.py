"""What only the directory store does: its layout, files changed behind its back, symlinks,
hostile names on a real file system, and two processes writing one blob at once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import textwrap
from pathlib import Path

import pytest

from parley.blobstore.local import LocalBlobStore
from parley.errors import NotFound, Reject

from .test_contract import HOSTILE_PATHS


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


async def test_layout_bytes_as_written_sidecars_outside(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store", "documents")
    await store.put("acme/q3.pdf", b"bytes", content_type="application/pdf", metadata={"a": "b"})
    assert (tmp_path / "store" / "documents" / "acme" / "q3.pdf").read_bytes() == b"bytes"
    container = tmp_path / "store" / "documents"
    assert [p for p in container.rglob("*") if p.is_file()] == [container / "acme" / "q3.pdf"]
    [sidecar] = (tmp_path / "store" / ".meta").rglob("*.json")
    assert "acme/q3.pdf" in sidecar.read_text() and "application/pdf" in sidecar.read_text()
    assert not list((tmp_path / "store" / ".tmp").iterdir())  # no temp file left behind
    assert [i.path async for i in store.list()] == ["acme/q3.pdf"]


async def test_file_dropped_by_another_tool(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, "documents")
    (tmp_path / "documents" / "inbox").mkdir(parents=True)
    (tmp_path / "documents" / "inbox" / "notes.txt").write_bytes(b"dropped")
    [listed] = [i async for i in store.list()]
    assert listed.path == "inbox/notes.txt"
    assert listed.etag == hashlib.sha256(b"dropped").hexdigest()
    assert listed.content_type == "text/plain"
    data, info = await store.get("inbox/notes.txt")
    assert (data, info.etag) == (b"dropped", listed.etag)


async def test_file_changed_behind_the_stores_back(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, "documents")
    put = await store.put("doc.txt", b"ours", metadata={"filename": "doc.txt"})
    (tmp_path / "documents" / "doc.txt").write_bytes(b"theirs, longer")  # in place, no sidecar
    data, info = await store.get("doc.txt")
    assert data == b"theirs, longer"
    assert info.etag == hashlib.sha256(data).hexdigest() != put.etag
    assert dict(info.metadata) == {}  # the old metadata described other bytes
    stat = await store.stat("doc.txt")
    assert stat is not None and stat.etag == info.etag and stat.size == len(data)


async def test_hostile_names_never_touch_the_disk(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalBlobStore(root, "documents")
    await store.put("inside.txt", b"x")
    before = tree(tmp_path)
    for path in HOSTILE_PATHS:
        with pytest.raises(Reject):
            await store.put(path, b"evil")
    assert tree(tmp_path) == before


async def test_symlinks_do_not_lead_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    store = LocalBlobStore(tmp_path / "store", "documents")
    await store.put("real.txt", b"x")
    (tmp_path / "store" / "documents" / "linkdir").symlink_to(outside)
    (tmp_path / "store" / "documents" / "link.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(Reject):
        await store.get("linkdir/secret.txt")
    with pytest.raises(Reject):
        await store.put("linkdir/new.txt", b"evil")
    with pytest.raises(NotFound):
        await store.get("link.txt")
    assert await store.delete("link.txt") is False
    assert [i.path async for i in store.list()] == ["real.txt"]
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == b"secret"


async def test_blob_and_folder_of_one_name_conflict(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, "documents")
    await store.put("a", b"file")
    with pytest.raises(Reject) as caught:
        await store.put("a/b", b"x")
    assert caught.value.reason == "path_conflict"
    await store.put("c/d", b"x")
    with pytest.raises(Reject):
        await store.put("c", b"x")
    assert [i.path async for i in store.list()] == ["a", "c/d"]


def test_bad_container_name(tmp_path: Path) -> None:
    for name in ("..", ".meta", "Docs", "a", "a--b", "x/y"):
        with pytest.raises(Reject):
            LocalBlobStore(tmp_path, name)


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from parley.blobstore.local import LocalBlobStore

    async def main(root: str, tag: str, rounds: int) -> None:
        store = LocalBlobStore(Path(root), "documents")
        for i in range(rounds):
            body = f"{tag}:{i}:".encode() * (500 + 37 * i)
            await store.put("shared/doc.bin", body, metadata={"writer": tag, "round": str(i)})

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


def expected_body(tag: str, i: int) -> bytes:
    return f"{tag}:{i}:".encode() * (500 + 37 * i)


async def test_two_processes_writing_one_blob(tmp_path: Path) -> None:
    """Every read sees one writer's whole body with that writer's own ETag and metadata."""
    store = LocalBlobStore(tmp_path, "documents")
    rounds = 150
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(tmp_path), tag, str(rounds),
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
        )
        for tag in ("A", "B")
    ]
    finished = asyncio.ensure_future(asyncio.gather(*(w.wait() for w in writers)))
    reads = 0
    while not finished.done():
        try:
            data, info = await store.get("shared/doc.bin")
        except NotFound:
            await asyncio.sleep(0.001)
            continue
        tag, i = info.metadata["writer"], int(info.metadata["round"])
        assert data == expected_body(tag, i)
        assert info.etag == hashlib.sha256(data).hexdigest()
        assert info.size == len(data)
        reads += 1
    assert [w.returncode for w in writers] == [0, 0]
    assert reads > 10
    data, info = await store.get("shared/doc.bin")
    assert data == expected_body(info.metadata["writer"], rounds - 1)
    assert not list((tmp_path / ".tmp").iterdir())
