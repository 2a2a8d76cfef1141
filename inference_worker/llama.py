"""A llama-architecture decoder in numpy: GGUF weights dequantised to float32 once at load, then
RMSNorm, RoPE, grouped-query attention over a preallocated KV cache, SwiGLU, tied or separate
output head. No torch, no compiler: every large operation is one float32 BLAS matmul.

GGUF conventions handled here (as llama.cpp's converter writes them):

* tensor shapes are GGML order (``[in, out]``); numpy sees the rows as ``(out, in)``;
* Q and K rows are permuted per head so that llama.cpp can rotate *adjacent* pairs. The loader
  undoes that permutation, so the forward pass rotates the two *halves* of each head
  (Hugging Face's ``rotate_half``), which is the same function and cheaper in numpy;
* no ``output.weight`` means the output head is the token embedding (tied).

Not supported (raises at load): rope scaling, partial rotary dimensions, MoE, biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]

# Prefill runs in chunks of this many tokens: bounds the attention scores' memory and lets a
# stop request through between chunks.
PREFILL_CHUNK = 128


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    context_length: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ValueError(f"heads do not divide: {self}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_gguf_fields(cls, fields: Mapping[str, Any]) -> LlamaConfig:
        arch = fields.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"general.architecture is {arch!r}: only 'llama' is supported")
        scaling = fields.get("llama.rope.scaling.type")
        if scaling not in (None, "none"):
            raise ValueError(f"rope scaling {scaling!r} is not supported")
        config = cls(
            vocab_size=len(fields["tokenizer.ggml.tokens"]),
            dim=int(fields["llama.embedding_length"]),
            hidden_dim=int(fields["llama.feed_forward_length"]),
            n_layers=int(fields["llama.block_count"]),
            n_heads=int(fields["llama.attention.head_count"]),
            n_kv_heads=int(fields.get("llama.attention.head_count_kv", 0))
            or int(fields["llama.attention.head_count"]),
            context_length=int(fields["llama.context_length"]),
            rope_theta=float(fields.get("llama.rope.freq_base", 10000.0)),
            norm_eps=float(fields["llama.attention.layer_norm_rms_epsilon"]),
        )
        rot = fields.get("llama.rope.dimension_count")
        if rot is not None and int(rot) != config.head_dim:
            raise ValueError(f"partial rotary ({rot} of {config.head_dim}) is not supported")
        return config


@dataclass(frozen=True, eq=False)
class Layer:
    attn_norm: Array  # (dim,)
    wqkv: Array  # (q + k + v rows, dim): Q, K (un-permuted) and V stacked, one matmul
    wo: Array  # (dim, dim)
    ffn_norm: Array  # (dim,)
    w_gate_up: Array  # (2 * hidden, dim): gate then up, one matmul
    w_down: Array  # (dim, hidden)


@dataclass(frozen=True, eq=False)
class Weights:
    embedding: Array  # (vocab, dim)
    layers: tuple[Layer, ...]
    norm: Array  # (dim,)
    output: Array  # (vocab, dim); the embedding itself when tied


class KVCache:
    """Keys and values of every layer for up to ``capacity`` positions, allocated once.

    ``length`` positions are valid; the next forward call writes from there. Reuse one cache
    across generations with :meth:`reset` (pages are touched only as far as they are used)."""

    def __init__(self, config: LlamaConfig, capacity: int) -> None:
        shape = (config.n_layers, config.n_kv_heads, capacity, config.head_dim)
        self.k: Array = np.zeros(shape, dtype=np.float32)
        self.v: Array = np.zeros(shape, dtype=np.float32)
        self.capacity = capacity
        self.length = 0

    def reset(self) -> None:
        self.length = 0


class Llama:
    """The model. ``forward`` is not thread-safe per cache; weights are read-only and shared."""

    def __init__(self, config: LlamaConfig, weights: Weights) -> None:
        self.config = config
        self.weights = weights
        half = config.head_dim // 2
        inv_freq = config.rope_theta ** (-np.arange(half, dtype=np.float64) / half)
        angles = np.outer(np.arange(config.context_length, dtype=np.float64), inv_freq)
        self._cos: Array = np.cos(angles).astype(np.float32)
        self._sin: Array = np.sin(angles).astype(np.float32)

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_tensors(
        cls, config: LlamaConfig, tensor: Callable[[str], Array | None]
    ) -> Llama:
        """Build from GGUF-named float32 tensors (``blk.N.attn_q.weight``, ...), rows as stored
        in GGUF (Q/K permuted for adjacent-pair RoPE). ``tensor`` returns None if absent."""

        def need(name: str) -> Array:
            value = tensor(name)
            if value is None:
                raise ValueError(f"the model file has no tensor {name}")
            return value

        c = config
        layers = []
        for i in range(c.n_layers):
            p = f"blk.{i}."
            if any(tensor(p + x) is not None for x in ("attn_q.bias", "ffn_gate_inp.weight")):
                raise ValueError("attention biases and MoE layers are not supported")
            wq = _unpermute(need(p + "attn_q.weight"), c.n_heads)
            wk = _unpermute(need(p + "attn_k.weight"), c.n_kv_heads)
            wv = need(p + "attn_v.weight")
            layers.append(
                Layer(
                    attn_norm=need(p + "attn_norm.weight"),
                    wqkv=np.ascontiguousarray(np.concatenate([wq, wk, wv])),
                    wo=need(p + "attn_output.weight"),
                    ffn_norm=need(p + "ffn_norm.weight"),
                    w_gate_up=np.ascontiguousarray(
                        np.concatenate([need(p + "ffn_gate.weight"), need(p + "ffn_up.weight")])
                    ),
                    w_down=need(p + "ffn_down.weight"),
                )
            )
        embedding = need("token_embd.weight")
        output = tensor("output.weight")
        weights = Weights(
            embedding=embedding,
            layers=tuple(layers),
            norm=need("output_norm.weight"),
            output=embedding if output is None else output,
        )
        _check_shapes(c, weights)
        return cls(c, weights)

    @classmethod
    def random(cls, config: LlamaConfig, seed: int = 0) -> Llama:
        """Random weights of the right shapes, for fast tests of everything around the model:
        it produces gibberish at hundreds of tokens per second when small."""
        return cls.from_tensors(config, random_tensors(config, seed).get)

    @classmethod
    def load(cls, path: Path) -> tuple[Llama, dict[str, Any]]:
        """Read a GGUF file: the model (every tensor dequantised to float32 now) and the file's
        metadata values (for the tokenizer). Raises ValueError on an unsupported file."""
        from gguf.quants import dequantize

        reader = _reader(path)
        fields = {name: field.contents() for name, field in reader.fields.items()}
        config = LlamaConfig.from_gguf_fields(fields)
        tensors = {t.name: t for t in reader.tensors}

        def tensor(name: str) -> Array | None:
            t = tensors.get(name)
            if t is None:
                return None
            rows = tuple(int(n) for n in reversed(t.shape.tolist()))
            value = dequantize(np.asarray(t.data), t.tensor_type)
            return np.ascontiguousarray(np.asarray(value, dtype=np.float32).reshape(rows))

        return cls.from_tensors(config, tensor), fields

    def new_cache(self, capacity: int | None = None) -> KVCache:
        return KVCache(self.config, min(capacity or self.config.context_length,
                                        self.config.context_length))

    # --- the forward pass --------------------------------------------------------------------

    def forward(self, tokens: Sequence[int], cache: KVCache, *, all_logits: bool = False) -> Array:
        """Run ``tokens`` at positions ``cache.length...``, append their keys/values to the
        cache and return the logits of the last token ``(vocab,)``, or of every token
        ``(len, vocab)`` with ``all_logits``. Raises ValueError past the cache's capacity."""
        c, w = self.config, self.weights
        n = len(tokens)
        start = cache.length
        end = start + n
        if n == 0:
            raise ValueError("no tokens")
        if end > cache.capacity:
            raise ValueError(f"{end} positions exceed the KV cache ({cache.capacity})")
        nh, nkv, hd = c.n_heads, c.n_kv_heads, c.head_dim
        group = nh // nkv
        scale = np.float32(1.0 / math.sqrt(hd))
        cos = self._cos[start:end, None, :]
        sin = self._sin[start:end, None, :]
        mask = None
        if n > 1:  # query t (position start + t) sees keys 0..start + t
            mask = np.triu(np.full((n, end), -np.inf, dtype=np.float32), k=start + 1)

        x = w.embedding[np.asarray(tokens, dtype=np.int64)]
        for i, layer in enumerate(w.layers):
            h = _rms_norm(x, layer.attn_norm, c.norm_eps)
            qkv = _matmul(h, layer.wqkv)
            q = _rope(qkv[:, : nh * hd].reshape(n, nh, hd), cos, sin)
            k = _rope(qkv[:, nh * hd : (nh + nkv) * hd].reshape(n, nkv, hd), cos, sin)
            v = qkv[:, (nh + nkv) * hd :].reshape(n, nkv, hd)
            cache.k[i, :, start:end] = k.transpose(1, 0, 2)
            cache.v[i, :, start:end] = v.transpose(1, 0, 2)
            keys = cache.k[i, :, :end]  # (nkv, end, hd)
            values = cache.v[i, :, :end]
            # Query heads kv*group .. kv*group+group-1 share kv head `kv` (repeat_interleave).
            qg = q.reshape(n, nkv, group, hd).transpose(1, 2, 0, 3).reshape(nkv, group * n, hd)
            scores = np.matmul(qg, keys.transpose(0, 2, 1)) * scale  # (nkv, group*n, end)
            if mask is not None:
                scores = scores.reshape(nkv, group, n, end)
                scores += mask
                scores = scores.reshape(nkv, group * n, end)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            attn = np.matmul(scores, values)  # (nkv, group*n, hd)
            attn = attn.reshape(nkv, group, n, hd).transpose(2, 0, 1, 3).reshape(n, nh * hd)
            x = x + _matmul(attn, layer.wo)

            h = _rms_norm(x, layer.ffn_norm, c.norm_eps)
            gate_up = _matmul(h, layer.w_gate_up)
            gate, up = gate_up[:, : c.hidden_dim], gate_up[:, c.hidden_dim :]
            x = x + _matmul(_silu(gate) * up, layer.w_down)
        cache.length = end

        if not all_logits:
            x = x[-1:]
        logits = _matmul(_rms_norm(x, w.norm, c.norm_eps), w.output)
        return logits if all_logits else logits[0]

    def prefill(
        self, tokens: Sequence[int], cache: KVCache, *, stop: Callable[[], bool] = lambda: False
    ) -> Array | None:
        """:meth:`forward` in chunks of PREFILL_CHUNK tokens; None if ``stop()`` turned true
        between chunks."""
        logits: Array | None = None
        for at in range(0, len(tokens), PREFILL_CHUNK):
            if stop():
                return None
            logits = self.forward(tokens[at : at + PREFILL_CHUNK], cache)
        return logits

    def generate(
        self,
        prompt: Sequence[int],
        cache: KVCache,
        *,
        max_tokens: int,
        sample: Callable[[Array], int],
        stop: Callable[[], bool] = lambda: False,
    ) -> Generator[int, None, None]:
        """Token ids after ``prompt`` (the cache is reset first), one per step, until
        ``max_tokens``, a full cache, or ``stop()`` (checked before each step). The caller
        decides what ends a turn (an end-of-turn id) and closes the iterator there."""
        cache.reset()
        if len(prompt) >= cache.capacity:
            raise ValueError(f"a {len(prompt)}-token prompt leaves no room in {cache.capacity}")
        logits = self.prefill(prompt, cache, stop=stop)
        for produced in range(max_tokens):
            if logits is None or stop():
                return
            token = sample(logits)
            yield token
            # Prompt plus answer never exceed the capacity (the last token is never cached).
            if produced + 1 == max_tokens or cache.length + 1 >= cache.capacity:
                return
            logits = self.forward([token], cache)


def random_tensors(config: LlamaConfig, seed: int = 0) -> dict[str, Array]:
    """GGUF-named random tensors for ``config`` (norms 1, matrices N(0, 1/in)); no output
    tensor, so the head is tied to the embedding."""
    rng = np.random.default_rng(seed)
    c = config
    kv = c.n_kv_heads * c.head_dim
    shapes = {"token_embd.weight": (c.vocab_size, c.dim), "output_norm.weight": (c.dim,)}
    for i in range(c.n_layers):
        p = f"blk.{i}."
        shapes |= {
            p + "attn_norm.weight": (c.dim,),
            p + "attn_q.weight": (c.dim, c.dim),
            p + "attn_k.weight": (kv, c.dim),
            p + "attn_v.weight": (kv, c.dim),
            p + "attn_output.weight": (c.dim, c.dim),
            p + "ffn_norm.weight": (c.dim,),
            p + "ffn_gate.weight": (c.hidden_dim, c.dim),
            p + "ffn_up.weight": (c.hidden_dim, c.dim),
            p + "ffn_down.weight": (c.dim, c.hidden_dim),
        }
    tensors: dict[str, Array] = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            tensors[name] = np.ones(shape, dtype=np.float32)
        else:
            scale = 1.0 / math.sqrt(shape[1])
            tensors[name] = (rng.standard_normal(shape, dtype=np.float32) * scale)
    return tensors


def greedy(logits: Array) -> int:
    return int(np.argmax(logits))


class Sampler:
    """Temperature + nucleus (top-p) sampling; temperature 0 is greedy. Seeded: the same seed,
    prompt and settings give the same tokens.

    Repetition control, over the tokens this sampler has produced (not the prompt, so figures
    and names are still copied from the sources): a token produced among the last
    ``penalty_window`` has its logit divided by ``repetition_penalty`` (multiplied when
    negative), and a token that would repeat an ``no_repeat_ngram``-token sequence already
    produced is never chosen. A small model decoding greedily otherwise falls into a loop
    (one paragraph again and again until ``max_tokens``). One sampler per generation: it keeps
    that generation's history."""

    def __init__(
        self,
        temperature: float,
        top_p: float = 1.0,
        seed: int | None = None,
        *,
        repetition_penalty: float = 1.0,
        no_repeat_ngram: int = 0,
        penalty_window: int = 64,
    ) -> None:
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"temperature {temperature} / top_p {top_p} out of range")
        if repetition_penalty < 1.0 or no_repeat_ngram < 0 or no_repeat_ngram == 1:
            raise ValueError(
                f"repetition_penalty {repetition_penalty} (>= 1) / no_repeat_ngram "
                f"{no_repeat_ngram} (0 or >= 2) out of range"
            )
        self.temperature = temperature
        self.top_p = top_p
        self.rng = np.random.default_rng(seed)
        self.repetition_penalty = repetition_penalty
        self.no_repeat_ngram = no_repeat_ngram
        self.penalty_window = penalty_window
        self.history: list[int] = []
        self._next: dict[tuple[int, ...], set[int]] = {}  # (n-1)-gram -> tokens that followed

    def banned(self) -> set[int]:
        """Tokens that would now complete an n-gram already produced."""
        n = self.no_repeat_ngram
        if not n or len(self.history) < n - 1:
            return set()
        return self._next.get(tuple(self.history[len(self.history) - n + 1:]), set())

    def _control(self, logits: Array) -> Array:
        if not self.history or (self.repetition_penalty == 1.0 and not self.no_repeat_ngram):
            return logits
        out = logits.astype(np.float32, copy=True)
        if self.repetition_penalty != 1.0:
            recent = np.unique(np.asarray(self.history[-self.penalty_window:]))
            values = out[recent]
            out[recent] = np.where(values > 0, values / self.repetition_penalty,
                                   values * self.repetition_penalty)
        banned = self.banned()
        if banned and len(banned) < out.shape[0]:
            out[np.fromiter(banned, dtype=np.int64)] = -np.inf
        return out

    def _record(self, token: int) -> None:
        n = self.no_repeat_ngram
        if n and len(self.history) >= n - 1:
            prefix = tuple(self.history[len(self.history) - n + 1:])
            self._next.setdefault(prefix, set()).add(token)
        self.history.append(token)

    def __call__(self, logits: Array) -> int:
        logits = self._control(logits)
        if self.temperature == 0:
            token = greedy(logits)
        else:
            z = logits.astype(np.float64) / self.temperature
            order = np.argsort(-z)
            probs = np.exp(z[order] - z[order[0]])
            probs /= probs.sum()
            # The smallest prefix whose mass reaches top_p (at least one token).
            keep = min(int(np.searchsorted(np.cumsum(probs), self.top_p)) + 1, len(probs))
            kept = probs[:keep] / probs[:keep].sum()
            token = int(order[self.rng.choice(keep, p=kept)])
        self._record(token)
        return token


def _reader(path: Path) -> Any:
    """A ``gguf.GGUFReader`` whose slices are plain ndarrays, not ``np.memmap`` views: its
    element-by-element parse of 49k tokens and 49k merges takes a third of the time (the memmap
    subclass' per-slice bookkeeping dominated). Same values; the file is still mapped, not read."""
    from gguf import GGUFReader

    class Reader(GGUFReader):
        def _get(
            self, offset: int, dtype: Any, count: int = 1, override_order: Any = None
        ) -> Any:
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self.__dict__["_plain"] = np.asarray(self.data)
            count = int(count)
            end = offset + np.dtype(dtype).itemsize * count
            arr = plain[offset:end].view(dtype=dtype)[:count]
            order = self.byte_order if override_order is None else override_order
            return arr.view(arr.dtype.newbyteorder(order))

    return Reader(path)


def _unpermute(w: Array, heads: int) -> Array:
    """Undo llama.cpp's per-head Q/K row permutation (adjacent pairs -> halves)."""
    rows, cols = w.shape
    return np.ascontiguousarray(
        w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
    )


def _matmul(x: Array, w: Array) -> Array:
    """``x @ w.T`` for activations ``(n, in)`` and a weight ``(out, in)``; one token is a
    matrix-vector product, which OpenBLAS runs faster than a 1-row GEMM."""
    out: Array = (w @ x[0])[None, :] if x.shape[0] == 1 else x @ w.T
    return out


def _rms_norm(x: Array, weight: Array, eps: float) -> Array:
    variance: Array = np.mean(np.square(x), axis=-1, keepdims=True, dtype=np.float32)
    out: Array = (x / np.sqrt(variance + np.float32(eps))) * weight
    return out


def _rope(x: Array, cos: Array, sin: Array) -> Array:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _silu(x: Array) -> Array:
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88 gives the right limit, 0
        out: Array = x / (np.exp(-x) + 1)
    return out


def _check_shapes(c: LlamaConfig, w: Weights) -> None:
    kv = c.n_kv_heads * c.head_dim
    expected = {
        "token_embd": (w.embedding.shape, (c.vocab_size, c.dim)),
        "output": (w.output.shape, (c.vocab_size, c.dim)),
    }
    for i, layer in enumerate(w.layers):
        expected[f"blk.{i}.qkv"] = (layer.wqkv.shape, (c.dim + 2 * kv, c.dim))
        expected[f"blk.{i}.ffn_down"] = (layer.w_down.shape, (c.dim, c.hidden_dim))
    for name, (got, want) in expected.items():
        if got != want:
            raise ValueError(f"{name} has shape {got}, the config says {want}")
