"""The fused graph builder: it reads every weight of the packaged export, quantizes what it says
it quantizes, and refuses an export it does not know; its cache gives a later process the same
graph without building it, and is skipped when it cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from parley.embedder import minilm_graph
from parley.embedder.local import default_model_path
from parley.embedder.minilm_graph import (
    HIDDEN,
    LAYERS,
    Weights,
    cached_fused_model,
    fused_model,
    packaged_weights,
    quantize_columns,
    required_names,
)


@pytest.fixture(scope="module")
def weights() -> Weights:
    return packaged_weights(default_model_path().read_bytes())


def test_every_weight_of_the_network_is_read_with_its_shape(weights: Weights) -> None:
    assert set(required_names()) <= set(weights)
    shapes = {name: value.shape for name, value in weights.items()}
    assert shapes["embeddings.word_embeddings.weight"] == (30522, HIDDEN)
    assert shapes["encoder.layer.0.attention.self.query.weight"] == (HIDDEN, HIDDEN)
    assert shapes["encoder.layer.5.intermediate.dense.weight"] == (HIDDEN, 4 * HIDDEN)
    assert shapes["encoder.layer.5.output.dense.weight"] == (4 * HIDDEN, HIDDEN)


def test_the_int8_graph_quantizes_the_attention_products_only(
    weights: Weights,
) -> None:
    int8 = onnx.load_from_string(fused_model(weights, int8=True))
    fp32 = onnx.load_from_string(fused_model(weights, int8=False))
    ops = [node.op_type for node in int8.graph.node]
    assert ops.count("QAttention") == LAYERS
    assert ops.count("DynamicQuantizeMatMul") == LAYERS  # the attention output projection
    assert ops.count("MatMul") == 2 * LAYERS  # the feed-forward projections stay fp32
    assert ops.count("SkipLayerNormalization") == 2 * LAYERS
    fp32_ops = [node.op_type for node in fp32.graph.node]
    assert fp32_ops.count("Attention") == LAYERS and "DynamicQuantizeMatMul" not in fp32_ops
    assert [i.name for i in int8.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in int8.graph.output] == ["last_hidden_state"]


def test_column_quantization_keeps_each_column_within_half_a_step() -> None:
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(64, 8)).astype(np.float32)
    weight[:, 3] *= 100  # one wide column must not coarsen the others
    weight[:, 5] = 0  # an all-zero column gets a usable scale
    q, scale = quantize_columns(weight)
    assert q.dtype == np.int8 and scale.shape == (8,) and np.all(scale > 0)
    error = np.abs(q * scale - weight)
    assert np.all(error <= scale / 2 + 1e-6)
    assert np.abs(q).max() == 127


def test_an_unknown_export_is_refused(weights: Weights) -> None:
    fused = fused_model(weights, int8=False)  # our own graph names no ``inner.`` weights
    with pytest.raises(ValueError, match="lacks"):
        packaged_weights(fused)


def test_the_cache_gives_the_built_graph_back_without_building_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packaged = default_model_path().read_bytes()
    cache = tmp_path / "cache"
    built = cached_fused_model(packaged, int8=True, cache=cache)
    assert built == fused_model(packaged_weights(packaged), int8=True)
    [kept] = cache.iterdir()  # written whole (no part left behind)
    assert kept.suffix == ".onnx" and (cache.stat().st_mode & 0o777) == 0o700

    def no_build(*_args: object, **_kwargs: object) -> bytes:
        raise AssertionError("built again")

    with monkeypatch.context() as patched:
        patched.setattr(minilm_graph, "fused_model", no_build)
        assert cached_fused_model(packaged, int8=True, cache=cache) == built
    # Another graph (or another packaged file) is another entry.
    fp32 = cached_fused_model(packaged, int8=False, cache=cache)
    assert fp32 != built and len(list(cache.iterdir())) == 2


def test_a_new_version_of_a_graph_replaces_the_old_file(tmp_path: Path) -> None:
    packaged = default_model_path().read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    # What an earlier package or code version left: other keys of the int8 and fp32 graphs.
    (cache / "minilm-int8-000000000000000000000000.onnx").write_bytes(b"old int8")
    (cache / "minilm-fp32-000000000000000000000000.onnx").write_bytes(b"old fp32")
    cached_fused_model(packaged, int8=True, cache=cache)
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 2 and "minilm-fp32-000000000000000000000000.onnx" in names
    assert names[1].startswith("minilm-int8-") and names[1] != "minilm-int8-" + "0" * 24 + ".onnx"


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path: Path) -> None:
    packaged = default_model_path().read_bytes()
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert cached_fused_model(packaged, int8=True, cache=blocked / "cache") == fused_model(
        packaged_weights(packaged), int8=True)
