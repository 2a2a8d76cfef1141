"""The blob store as a directory: ``root/<container>/<path>`` holds the bytes, exactly as written,
so other tools can drop files in and read them out.

Properties live in a sidecar JSON per blob under ``root/.meta/<container>/`` (named by a hash of
the path, so sidecars never collide with each other or with blob names), temp files under
``root/.tmp/``; neither is inside the container directory, so :meth:`LocalBlobStore.list` never
sees them. The ETag is the SHA-256 of the content: the same bytes always get the same ETag.

Concurrency: a writer writes the bytes and the sidecar to temp files first, then, holding an
exclusive ``flock`` on ``root/.meta/<container>.lock``, renames the sidecar and then the data file
into place (``os.replace``, atomic). Readers take the lock shared only while they open the data
file and read its sidecar, then read the bytes from the open file. So a reader sees a whole old or
a whole new blob with its own properties, across threads and processes. A sidecar records the
inode, size and mtime of the file it describes; a file changed behind the store's back (another
tool) no longer matches, and its ETag is then recomputed from the content (its metadata is gone).

Local limitation: a path cannot be both a blob and a "folder" (``a`` and ``a/b``), which Azure
allows; such a put raises Reject(reason="path_conflict").
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import hashlib
import json
import mimetypes
import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from parley.blobstore import BLOCK_BYTES, BlobInfo
from parley.blobstore.names import (
    DEFAULT_CONTENT_TYPE,
    check_container,
    check_content_type,
    check_metadata,
    check_path,
    check_prefix,
)
from parley.errors import NotFound, Reject, TooLarge

_LIST_BATCH = 256


@dataclass(frozen=True)
class _Sidecar:
    """What the store remembers about one data file, valid while the file is unchanged."""

    etag: str
    inode: int
    size: int
    mtime_ns: int
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def matches(self, st: os.stat_result) -> bool:
        return (self.inode, self.size, self.mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)

    def to_json(self, path: str) -> bytes:
        record = {
            "path": path, "etag": self.etag, "inode": self.inode, "size": self.size,
            "mtime_ns": self.mtime_ns, "content_type": self.content_type,
            "metadata": dict(self.metadata),
        }
        return json.dumps(record, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> _Sidecar | None:
        """None for anything unreadable: the caller then treats the file as unknown."""
        try:
            record: dict[str, Any] = json.loads(raw)
            metadata = record.get("metadata") or {}
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
                return None
            return cls(
                etag=str(record["etag"]), inode=int(record["inode"]), size=int(record["size"]),
                mtime_ns=int(record["mtime_ns"]), content_type=str(record["content_type"]),
                metadata=metadata,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _guess_content_type(path: str) -> str:
    return mimetypes.guess_type(path, strict=False)[0] or DEFAULT_CONTENT_TYPE


class LocalBlobStore:
    """A :class:`parley.blobstore.BlobStore` in a directory. All file I/O runs in
    ``asyncio.to_thread``; a cancelled call may still finish its write in the thread, and a write
    is either fully visible or not at all. ``close()`` has nothing to release."""

    def __init__(self, root: Path, container: str) -> None:
        self.container = check_container(container)
        self._root = Path(os.path.abspath(root))
        self._dir = self._root / container
        self._meta = self._root / ".meta" / container
        self._tmp = self._root / ".tmp"
        self._lock_path = self._root / ".meta" / f"{container}.lock"

    # --- the async face -----------------------------------------------------------------------

    async def put(
        self,
        path: str,
        data: bytes | IO[bytes],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        """Create or replace the blob atomically (bytes, or a file copied block by block);
        returns its properties (ETag = SHA-256)."""
        check_path(path)
        meta = check_metadata(metadata)
        ctype = check_content_type(content_type)
        source = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else data
        return await asyncio.to_thread(self._put, path, source, ctype, meta)

    async def get(self, path: str) -> tuple[bytes, BlobInfo]:
        """The blob's bytes and properties. Raises :class:`parley.errors.NotFound`."""
        check_path(path)
        return await asyncio.to_thread(self._get, path)

    async def download(self, path: str, into: IO[bytes], *, max_bytes: int) -> BlobInfo:
        """Copy the blob into ``into`` block by block; TooLarge from its size before a byte is
        copied. Raises :class:`parley.errors.NotFound`."""
        check_path(path)
        return await asyncio.to_thread(self._download, path, into, max_bytes)

    async def stat(self, path: str) -> BlobInfo | None:
        """Properties, or None when there is no such blob."""
        check_path(path)
        return await asyncio.to_thread(self._stat, path)

    async def delete(self, path: str) -> bool:
        """Remove the blob and its sidecar; False when it was not there."""
        check_path(path)
        return await asyncio.to_thread(self._delete, path)

    async def list(self, prefix: str = "") -> AsyncIterator[BlobInfo]:
        """Every blob whose path starts with ``prefix``, in path (code point) order. Files whose
        names are not valid blob paths (dropped by other tools) and symlinks are skipped; a blob
        deleted while the listing runs is left out."""
        check_prefix(prefix)
        paths = await asyncio.to_thread(self._walk, prefix)
        for start in range(0, len(paths), _LIST_BATCH):
            batch = paths[start : start + _LIST_BATCH]
            for info in await asyncio.to_thread(self._stat_many, batch):
                if info is not None:
                    yield info

    async def upload_url(
        self, path: str, *, ttl_seconds: int, content_type: str | None = None
    ) -> str | None:
        """Always None: a directory has no URL a browser could PUT to; the gateway takes the
        upload itself. The path is still checked, as every store does."""
        check_path(path)
        check_content_type(content_type)
        return None

    async def close(self) -> None:
        """Nothing to release."""

    # --- paths and locking --------------------------------------------------------------------

    def _data_path(self, path: str) -> Path:
        target = self._dir / path
        # check_path already rules out "..", absolute paths and backslashes; this catches a
        # symlinked folder placed inside the container by someone else.
        real_parent = os.path.realpath(target.parent)
        real_dir = os.path.realpath(self._dir)
        if real_parent != real_dir and not real_parent.startswith(real_dir + os.sep):
            raise Reject(f"blob path {path!r} leads outside the store", reason="bad_blob_path")
        return target

    def _sidecar_path(self, path: str) -> Path:
        digest = hashlib.sha256(path.encode("utf-8")).hexdigest()
        return self._meta / digest[:2] / f"{digest}.json"

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _read_sidecar(self, path: str) -> _Sidecar | None:
        try:
            return _Sidecar.from_json(self._sidecar_path(path).read_bytes())
        except OSError:
            return None

    def _write_temp(self, data: bytes | IO[bytes]) -> tuple[Path, os.stat_result, str]:
        """A temp file holding ``data`` (a file is copied block by block); with its stat and
        the SHA-256 of what was written."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        temp = self._tmp / f"{secrets.token_hex(12)}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        digest = hashlib.sha256()
        try:
            blocks = [data] if isinstance(data, bytes) else iter(
                lambda: data.read(BLOCK_BYTES), b""
            )
            for block in blocks:
                digest.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
            return temp, os.fstat(fd), digest.hexdigest()
        except BaseException:
            os.close(fd)
            fd = -1
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        finally:
            if fd >= 0:
                os.close(fd)

    # --- blocking operations (run in a thread) ------------------------------------------------

    def _put(
        self, path: str, data: bytes | IO[bytes], content_type: str, metadata: dict[str, str]
    ) -> BlobInfo:
        target = self._data_path(path)
        sidecar_path = self._sidecar_path(path)
        data_temp, st, etag = self._write_temp(data)
        sidecar = _Sidecar(etag, st.st_ino, st.st_size, st.st_mtime_ns, content_type, metadata)
        meta_temp: Path | None = None
        try:
            meta_temp, _, _ = self._write_temp(sidecar.to_json(path))
            with self._locked(exclusive=True):
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.is_dir():
                        raise IsADirectoryError(errno.EISDIR, "is a directory", str(target))
                except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                    raise Reject(
                        f"blob path {path!r} conflicts with an existing blob or folder",
                        reason="path_conflict",
                        hint="the local store cannot hold both 'a' and 'a/b'",
                    ) from exc
                sidecar_path.parent.mkdir(parents=True, exist_ok=True)
                # Sidecar first: a reader holding the lock never sees the new data without it.
                os.replace(meta_temp, sidecar_path)
                os.replace(data_temp, target)
        finally:
            for temp in (data_temp, meta_temp):
                if temp is not None:
                    with contextlib.suppress(FileNotFoundError):
                        temp.unlink()
        return BlobInfo(path, etag, st.st_size, content_type, st.st_mtime, dict(metadata))

    def _open(self, path: str) -> tuple[int, os.stat_result, _Sidecar | None] | None:
        """An open fd on the data file, its stat and sidecar, read together under the lock."""
        target = self._data_path(path)
        with self._locked(exclusive=False):
            try:
                fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # a symlink: not a blob of ours
                    return None
                raise
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            return fd, st, self._read_sidecar(path)

    def _info(self, path: str, st: os.stat_result, sidecar: _Sidecar | None, etag: str) -> BlobInfo:
        if sidecar is not None and sidecar.matches(st):
            return BlobInfo(
                path, sidecar.etag, st.st_size, sidecar.content_type, st.st_mtime,
                dict(sidecar.metadata),
            )
        return BlobInfo(path, etag, st.st_size, _guess_content_type(path), st.st_mtime, {})

    def _remember(self, path: str, st: os.stat_result, etag: str) -> None:
        """Record the ETag of a file changed behind our back, so it is hashed only once."""
        sidecar = _Sidecar(etag, st.st_ino, st.st_size, st.st_mtime_ns, _guess_content_type(path))
        temp, _, _ = self._write_temp(sidecar.to_json(path))
        try:
            with self._locked(exclusive=True):
                try:
                    now = os.lstat(self._data_path(path))
                except OSError:
                    return
                if sidecar.matches(now):
                    self._sidecar_path(path).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(temp, self._sidecar_path(path))
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _get(self, path: str) -> tuple[bytes, BlobInfo]:
        opened = self._open(path)
        if opened is None:
            raise NotFound(f"no blob {path!r} in {self.container!r}")
        fd, st, sidecar = opened
        with os.fdopen(fd, "rb") as file:
            data = file.read()
        if sidecar is not None and sidecar.matches(st):
            return data, self._info(path, st, sidecar, sidecar.etag)
        etag = hashlib.sha256(data).hexdigest()
        self._remember(path, st, etag)
        return data, self._info(path, st, None, etag)

    def _download(self, path: str, into: IO[bytes], max_bytes: int) -> BlobInfo:
        opened = self._open(path)
        if opened is None:
            raise NotFound(f"no blob {path!r} in {self.container!r}")
        fd, st, sidecar = opened
        with os.fdopen(fd, "rb") as file:
            if st.st_size > max_bytes:
                raise _too_large(path, st.st_size, max_bytes)
            digest = hashlib.sha256()
            written = 0
            for block in iter(lambda: file.read(BLOCK_BYTES), b""):
                written += len(block)
                if written > max_bytes:  # grown behind the store's back since the stat
                    raise _too_large(path, None, max_bytes)
                digest.update(block)
                into.write(block)
        if sidecar is not None and sidecar.matches(st):
            return self._info(path, st, sidecar, sidecar.etag)
        etag = digest.hexdigest()
        self._remember(path, st, etag)
        return self._info(path, st, None, etag)

    def _stat(self, path: str) -> BlobInfo | None:
        opened = self._open(path)
        if opened is None:
            return None
        fd, st, sidecar = opened
        with os.fdopen(fd, "rb") as file:
            if sidecar is not None and sidecar.matches(st):
                return self._info(path, st, sidecar, sidecar.etag)
            etag = hashlib.file_digest(file, "sha256").hexdigest()
        self._remember(path, st, etag)
        return self._info(path, st, None, etag)

    def _stat_many(self, paths: builtins.list[str]) -> builtins.list[BlobInfo | None]:
        return [self._stat(path) for path in paths]

    def _delete(self, path: str) -> bool:
        target = self._data_path(path)
        with self._locked(exclusive=True):
            try:
                if not stat.S_ISREG(os.lstat(target).st_mode):
                    return False
                target.unlink()
            except (FileNotFoundError, NotADirectoryError):
                return False
            with contextlib.suppress(FileNotFoundError):
                self._sidecar_path(path).unlink()
            # Empty folders would block a later blob of the same name ("a" after "a/b").
            parent = target.parent
            while parent != self._dir:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
        return True

    def _walk(self, prefix: str) -> builtins.list[str]:
        found: builtins.list[str] = []

        def visit(folder: Path, rel: str) -> None:
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                return
            # Sorting a folder's entries with "/" appended to sub-folder names gives global
            # path order: every path inside "a/" sorts exactly where "a/" does.
            keyed: builtins.list[tuple[str, os.DirEntry[str]]] = []
            for entry in entries:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    keyed.append((entry.name + "/", entry))
                elif entry.is_file(follow_symlinks=False):
                    keyed.append((entry.name, entry))
            for key, entry in sorted(keyed, key=lambda item: item[0]):
                full = rel + key
                if key.endswith("/"):
                    if full.startswith(prefix) or prefix.startswith(full):
                        visit(Path(entry.path), full)
                elif full.startswith(prefix):
                    try:
                        found.append(check_path(full))
                    except Reject:
                        continue  # not addressable as a blob (e.g. a backslash in the name)

        visit(self._dir, "")
        return found


def _too_large(path: str, size: int | None, limit: int) -> TooLarge:
    return TooLarge(f"blob {path!r} is over the {limit} byte limit", size=size, limit=limit)
