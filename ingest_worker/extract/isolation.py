"""Run :func:`ingest_worker.extract.dispatch.extract` in a child process, so a hostile file (an
infinite loop, a segfault in pdfium, a memory blow-up) costs one child, never the worker.

A pool keeps warm children (Python started, pdfium and lxml imported) and hands each document to
one of them over pipes: a JSON header line and the raw bytes in, length-prefixed JSON frames out
(progress, then the extraction or the failure). Nothing is unpickled from the child.

- A document that runs past ``timeout`` gets its child killed: ``ExtractionFailed("timeout")``.
- A child that dies (signal, abort, rlimit) gives ``ExtractionFailed("extractor_crashed")``; a
  reused child that dies before reporting any progress is retried once on a fresh child (it may
  have been dead before the document arrived).
- Cancelling the awaiting coroutine kills the child at once.
- Each child has an address-space limit (``memory_limit``); running out is ``too_large``.
- Children exit on their own when the parent goes away (stdin EOF, and PDEATHSIG on Linux).

The module is also the child's entry point: ``python -m ingest_worker.extract.isolation``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, get_args

from ingest_worker.extract.dispatch import check_size, preflight
from ingest_worker.extract.ocr import OcrOptions
from ingest_worker.extract.types import Block, BlockKind, Extraction, ExtractionFailed
from parley.errors import ConfigError
from parley.filetypes import KINDS

ProgressCallback = Callable[[int, int], Awaitable[None]]

#: Address-space limit of a child; generous for pdfium on a 100 MiB upload, fatal for bombs.
DEFAULT_MEMORY_LIMIT = 3 * 1024 * 1024 * 1024
#: What the worker process itself may use beside its children (Python, the tokenizer, clients;
#: the document's bytes go to a temporary file, never into the worker).
WORKER_RESERVE = 768 * 1024 * 1024
#: Below this a child cannot extract much of anything.
MIN_MEMORY_LIMIT = 384 * 1024 * 1024
#: A child is replaced after this many documents, bounding what a slow leak can accumulate.
MAX_DOCUMENTS_PER_CHILD = 500
#: How long a child may take to start and import the extractors.
SPAWN_TIMEOUT = 60.0
#: Progress frames are sent at most this often (plus the last page).
PROGRESS_INTERVAL = 0.2
_FRAME = struct.Struct(">Q")
_MAX_FRAME = 1 << 31
_BLOCK_KINDS = frozenset(get_args(BlockKind))
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def container_memory_limit(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this container (cgroup v2 ``memory.max`` or v1
    ``memory.limit_in_bytes``), or None when there is none."""
    for file in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        try:
            text = file.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= 1 << 60:
            return None
        return int(text)
    return None


def child_memory_limit(
    concurrency: int,
    *,
    container_limit: int | None,
    explicit: int | None = None,
    reserve: int = WORKER_RESERVE,
) -> int:
    """Each extraction child's address-space limit, such that ``concurrency`` children at their
    limit and the worker (``reserve``) still fit in ``container_limit``: a hostile file then
    costs its child (``too_large``), never an OOM kill of the whole pod (which redelivers the
    message to the next worker). ``explicit`` (``PARLEY_EXTRACT_MEMORY_BYTES``) wins when it
    fits; without a container limit, :data:`DEFAULT_MEMORY_LIMIT`. Raises ConfigError when the
    children cannot fit. Pure."""
    if container_limit is None:
        return explicit or DEFAULT_MEMORY_LIMIT
    room = (container_limit - reserve) // max(1, concurrency)
    limit = min(explicit or DEFAULT_MEMORY_LIMIT, room)
    if (explicit is not None and explicit > room) or limit < MIN_MEMORY_LIMIT:
        raise ConfigError(
            f"{concurrency} extraction children of {_mib(explicit or MIN_MEMORY_LIMIT)} each and "
            f"the worker ({_mib(reserve)}) do not fit in the container's "
            f"{_mib(container_limit)} memory limit",
            hint="raise the pod's memory limit, or lower PARLEY_QUEUES__INGEST__CONCURRENCY or "
            "PARLEY_EXTRACT_MEMORY_BYTES",
        )
    return limit


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


class _ChildDied(Exception):
    def __init__(self, returncode: int | None, *, progressed: bool) -> None:
        super().__init__(returncode)
        self.returncode = returncode
        self.progressed = progressed


@dataclass(eq=False)
class _Child:
    process: asyncio.subprocess.Process
    served: int = 0

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass(eq=False)
class ExtractorPool:
    """Warm extraction children for one event loop. ``max_idle`` children are kept between
    documents; concurrent documents each get their own child (extra ones are started on demand and
    stopped when more than ``max_idle`` are idle). :meth:`close` kills every child."""

    max_idle: int = 2
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT
    _idle: list[_Child] = field(default_factory=list)
    _busy: set[_Child] = field(default_factory=set)
    _reapers: set[asyncio.Task[Any]] = field(default_factory=set)
    _closed: bool = False

    async def extract(
        self,
        data: bytes | Path,
        filename: str,
        *,
        max_pages: int,
        max_bytes: int,
        timeout: float,
        max_chars: int | None = None,
        on_progress: ProgressCallback | None = None,
        ocr: OcrOptions | None = None,
    ) -> Extraction:
        """Extract ``data`` in a child; see the module docstring for failures and cancellation.
        Given a file path, the child reads the file itself: the bytes never pass through this
        process. ``max_chars`` caps the text extracted (``too_much_text``). With ``ocr``, the
        child does OCR within ``ocr.budget`` seconds, cut to leave a tenth of ``timeout`` (at
        least 5 s) for the rest of the document."""
        if self._closed:
            raise RuntimeError("the extractor pool is closed")
        fields: dict[str, Any] = {
            "filename": filename, "max_pages": max_pages, "max_bytes": max_bytes,
            "max_chars": max_chars,
            "ocr": None if ocr is None else _ocr_request(ocr, timeout),
        }
        if isinstance(data, Path):
            check_size(os.stat(data).st_size, max_bytes=max_bytes)
            fields.update(file=str(data), size=0)
            payload = b""
        else:
            preflight(data, max_bytes=max_bytes)
            fields["size"] = len(data)
            payload = data
        request = json.dumps(fields).encode() + b"\n"
        for attempt in range(2):
            child = await self._acquire(fresh=attempt > 0)
            reused = child.served > 0
            healthy = False
            try:
                async with asyncio.timeout(timeout):
                    outcome = await self._run(child, request, payload, on_progress)
                healthy = True
            except TimeoutError:
                raise ExtractionFailed(
                    "timeout",
                    f"extraction took longer than {timeout:g} s and was stopped",
                    hint="the file may be hostile or far larger than it looks",
                ) from None
            except _ChildDied as died:
                if reused and not died.progressed and attempt == 0:
                    continue
                raise ExtractionFailed(
                    "extractor_crashed",
                    f"the extractor process died on this file ({_describe(died.returncode)})",
                ) from None
            except (ValueError, KeyError, TypeError) as error:
                raise ExtractionFailed(
                    "extractor_crashed",
                    "the extractor process sent an unreadable answer",
                    hint=str(error)[:200],
                ) from None
            finally:
                self._release(child, healthy=healthy)
            if isinstance(outcome, ExtractionFailed):
                raise outcome
            return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    def pids(self) -> list[int]:
        """Process ids of the live children, idle and busy (for operators and tests)."""
        return [c.process.pid for c in [*self._idle, *self._busy] if c.alive]

    async def close(self) -> None:
        """Kill every child (idle and busy) and wait for them to exit."""
        self._closed = True
        children = [*self._idle, *self._busy]
        self._idle.clear()
        for child in children:
            self._kill(child)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                await child.process.wait()
        if self._reapers:
            await asyncio.gather(*self._reapers, return_exceptions=True)

    async def _acquire(self, *, fresh: bool) -> _Child:
        while self._idle and not fresh:
            child = self._idle.pop()
            if child.alive:
                self._busy.add(child)
                return child
        child = await self._spawn()
        self._busy.add(child)
        return child

    def _release(self, child: _Child, *, healthy: bool) -> None:
        self._busy.discard(child)
        child.served += 1
        if (
            healthy
            and child.alive
            and not self._closed
            and child.served < MAX_DOCUMENTS_PER_CHILD
            and len(self._idle) < self.max_idle
        ):
            self._idle.append(child)
        else:
            self._kill(child)

    async def _spawn(self) -> _Child:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p
        )
        args = [sys.executable, "-m", "ingest_worker.extract.isolation"]
        if self.memory_limit is not None:
            args += ["--memory-limit", str(self.memory_limit)]
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # a Ctrl-C in the worker's terminal is the worker's to handle
        )
        child = _Child(process)
        try:
            async with asyncio.timeout(SPAWN_TIMEOUT):
                ready = await _read_frame(process)
        except BaseException:
            self._kill(child)
            raise
        if ready != {"ready": True}:
            self._kill(child)
            raise RuntimeError(f"extractor child failed to start: {ready!r}")
        return child

    async def _run(
        self,
        child: _Child,
        request: bytes,
        data: bytes,
        on_progress: ProgressCallback | None,
    ) -> Extraction | ExtractionFailed:
        process = child.process
        assert process.stdin is not None
        progressed = False
        try:
            process.stdin.write(request)
            process.stdin.write(data)
            await process.stdin.drain()
            while True:
                message = await _read_frame(process)
                if message is None:
                    raise _ChildDied(await process.wait(), progressed=progressed)
                if "progress" in message:
                    progressed = True
                    if on_progress is not None:
                        done, total = message["progress"]
                        await on_progress(int(done), int(total))
                elif "ok" in message:
                    return _decode(message["ok"])
                elif "error" in message:
                    error = message["error"]
                    return ExtractionFailed(
                        str(error["reason"]), str(error["message"]), hint=error.get("hint")
                    )
                else:
                    raise ValueError(f"unexpected message from extractor child: {message!r}")
        except (BrokenPipeError, ConnectionResetError):
            raise _ChildDied(await process.wait(), progressed=progressed) from None

    def _kill(self, child: _Child) -> None:
        if child.alive:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        with contextlib.suppress(RuntimeError):  # the loop may be closing
            task = asyncio.get_running_loop().create_task(child.process.wait())
            self._reapers.add(task)
            task.add_done_callback(self._reapers.discard)


async def _read_frame(process: asyncio.subprocess.Process) -> dict[str, Any] | None:
    assert process.stdout is not None
    try:
        (size,) = _FRAME.unpack(await process.stdout.readexactly(_FRAME.size))
        if size > _MAX_FRAME:
            raise ValueError(f"extractor child sent an oversized frame ({size} bytes)")
        payload = await process.stdout.readexactly(size)
    except asyncio.IncompleteReadError:
        return None
    message = json.loads(payload)
    if not isinstance(message, dict):
        raise ValueError("extractor child sent a non-object frame")
    return message


def _describe(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def _ocr_request(ocr: OcrOptions, timeout: float) -> dict[str, Any]:
    budget = min(ocr.budget, max(timeout - max(timeout / 10, 5.0), 0.1))
    request = ocr.model_copy(update={"budget": budget}).model_dump(mode="json")
    if ocr.azure_key is not None:  # the pipe is private to the child: the key may travel
        request["azure_key"] = ocr.azure_key.get_secret_value()
    return request


def _encode(extraction: Extraction) -> dict[str, Any]:
    return {
        "kind": extraction.kind,
        "pages": extraction.pages,
        "extractor": extraction.extractor,
        "warnings": list(extraction.warnings),
        "title": extraction.title,
        "blocks": [[b.text, b.page, b.heading, b.kind, b.ocr] for b in extraction.blocks],
    }


def _decode(payload: dict[str, Any]) -> Extraction:
    """Rebuild an extraction from the child's JSON, checking every field's type on the way."""
    kind = payload["kind"]
    pages = payload["pages"]
    title = payload.get("title")
    if (kind not in KINDS or not (pages is None or isinstance(pages, int))
            or not (title is None or isinstance(title, str))):
        raise ValueError("malformed extraction from child")
    blocks = []
    for text, page, heading, block_kind, ocr in payload["blocks"]:
        if (
            not isinstance(text, str)
            or not (page is None or isinstance(page, int))
            or not (heading is None or isinstance(heading, str))
            or block_kind not in _BLOCK_KINDS
            or not isinstance(ocr, bool)
        ):
            raise ValueError("malformed block from child")
        blocks.append(Block(text=text, page=page, heading=heading, kind=block_kind, ocr=ocr))
    return Extraction(
        kind=kind,
        pages=pages,
        blocks=tuple(blocks),
        extractor=str(payload["extractor"]),
        warnings=tuple(str(w) for w in payload["warnings"]),
        title=title,
    )


# ----------------------------------------------------------------------------- default pool

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ExtractorPool] = (
    weakref.WeakKeyDictionary()
)


def default_pool() -> ExtractorPool:
    """The running loop's pool (children are bound to the loop that started them)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None or pool._closed:
        pool = _pools[loop] = ExtractorPool()
    return pool


async def extract_isolated(
    data: bytes,
    filename: str,
    *,
    max_pages: int,
    max_bytes: int,
    timeout: float,
    on_progress: ProgressCallback | None = None,
    ocr: OcrOptions | None = None,
) -> Extraction:
    """:func:`~ingest_worker.extract.dispatch.extract` in a warm child process of the running
    loop's default pool; ``on_progress(done, total)`` relays PDF pages (slides) done; ``ocr``
    turns OCR on (see :meth:`ExtractorPool.extract`). Raises
    :class:`ExtractionFailed` (``timeout``, ``extractor_crashed`` and every reason of
    ``extract``); cancelling kills the child."""
    return await default_pool().extract(
        data,
        filename,
        max_pages=max_pages,
        max_bytes=max_bytes,
        timeout=timeout,
        on_progress=on_progress,
        ocr=ocr,
    )


async def close_default_pool() -> None:
    """Stop the running loop's default pool (its children); a later call starts a new one."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


# ------------------------------------------------------------------------------------ child


def _child_main(argv: list[str]) -> None:
    """Serve extraction requests from stdin until EOF; frames go out on the original stdout."""
    memory_limit = int(argv[argv.index("--memory-limit") + 1]) if "--memory-limit" in argv else None
    _die_with_parent()
    if memory_limit is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Frames get a private copy of stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer

    # Imported here, once, so the first document pays nothing for pdfium and lxml.
    from ingest_worker.extract.dispatch import extract

    _send(out, {"ready": True})
    while True:
        header = stdin.readline()
        if not header:
            return
        request = json.loads(header)
        data = _read_exactly(stdin, int(request["size"]))
        if data is None:
            return
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if done == total or now - last >= PROGRESS_INTERVAL:
                last = now
                _send(out, {"progress": [done, total]})

        try:
            if request.get("file"):
                # Read here, under this child's memory limit: the worker never holds the bytes.
                data = Path(str(request["file"])).read_bytes()
            result = extract(
                data,
                str(request["filename"]),
                max_pages=int(request["max_pages"]),
                max_bytes=int(request["max_bytes"]),
                max_chars=request.get("max_chars"),
                ocr=None if request.get("ocr") is None else OcrOptions(**request["ocr"]),
                on_page=progress,
            )
            message: dict[str, Any] = {"ok": _encode(result)}
        except ExtractionFailed as failed:
            message = {
                "error": {"reason": failed.reason, "message": failed.message, "hint": failed.hint}
            }
        except MemoryError:
            message = {
                "error": {
                    "reason": "too_large",
                    "message": "the document needs more memory than allowed",
                }
            }
        except RecursionError:
            message = {
                "error": {
                    "reason": "malformed",
                    "message": "damaged file: its structure nests without end",
                }
            }
        except Exception as error:  # a bug or an unforeseen file shape: report, keep serving
            message = {
                "error": {
                    "reason": "extractor_crashed",
                    "message": f"the extractor failed on this file ({type(error).__name__})",
                    "hint": str(error)[:500],
                }
            }
        del data
        _send(out, message)


def _send(out: BinaryIO, message: dict[str, Any]) -> None:
    # ASCII escapes keep any lone surrogate a library let through encodable.
    payload = json.dumps(message).encode()
    out.write(_FRAME.pack(len(payload)) + payload)
    out.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
