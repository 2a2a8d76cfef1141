"""The numpy llama: its parts against their definitions on random models, and the whole model
against Hugging Face transformers' numbers for SmolLM2-135M-Instruct (the same GGUF file)."""

from __future__ import annotations

from itertools import count

import numpy as np
import pytest

from inference_worker.llama import (
    PREFILL_CHUNK,
    Llama,
    LlamaConfig,
    Sampler,
    _unpermute,
    greedy,
    random_tensors,
)
from inference_worker.vocab import Turn
from tests.inference_worker.smollm2 import REFERENCE, smollm2

SMALL = LlamaConfig(
    vocab_size=50, dim=32, hidden_dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
    context_length=400, rope_theta=10000.0,
)


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to Q/K rows (convert_hf_to_gguf.py, LlamaModel.permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape
    )


def test_unpermute_inverts_the_converter_permutation() -> None:
    w = np.random.default_rng(0).standard_normal((3 * 8, 5)).astype(np.float32)
    assert not np.array_equal(llama_cpp_permute(w, 3), w)
    np.testing.assert_array_equal(_unpermute(llama_cpp_permute(w, 3), 3), w)


def test_half_rotation_of_unpermuted_rows_is_llama_cpp_pair_rotation() -> None:
    """llama.cpp rotates adjacent pairs (2i, 2i+1) of the rows as stored in GGUF; the model
    rotates halves of the un-permuted rows. Same vectors, reordered."""
    model = Llama.random(SMALL, seed=3)
    hd, heads, pos = SMALL.head_dim, SMALL.n_heads, 37
    rng = np.random.default_rng(1)
    stored = rng.standard_normal((heads * hd, SMALL.dim)).astype(np.float32)
    x = rng.standard_normal(SMALL.dim).astype(np.float32)

    theta = SMALL.rope_theta ** (-np.arange(0, hd, 2) / hd) * pos
    pairs = (stored @ x).reshape(heads, hd // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    by_llama_cpp = np.stack(
        [a * np.cos(theta) - b * np.sin(theta), a * np.sin(theta) + b * np.cos(theta)], axis=-1
    ).reshape(heads * hd)

    from inference_worker.llama import _rope

    q = (_unpermute(stored, heads) @ x).reshape(1, heads, hd)
    mine = _rope(q, model._cos[pos : pos + 1, None, :], model._sin[pos : pos + 1, None, :])
    np.testing.assert_allclose(
        mine.reshape(heads * hd), _unpermute(by_llama_cpp[:, None], heads)[:, 0], atol=1e-5
    )


def test_cached_step_by_step_decoding_equals_one_full_pass() -> None:
    model = Llama.random(SMALL, seed=1)
    tokens = [int(t) for t in np.random.default_rng(2).integers(0, SMALL.vocab_size, 40)]
    full = model.forward(tokens, model.new_cache(), all_logits=True)

    cache = model.new_cache()
    steps = [model.forward(tokens[:9], cache)]
    steps += [model.forward([t], cache) for t in tokens[9:]]
    assert cache.length == len(tokens)
    np.testing.assert_allclose(np.stack(steps), full[8:], rtol=1e-4, atol=1e-4)


def test_chunked_prefill_equals_one_pass() -> None:
    model = Llama.random(SMALL, seed=1)
    tokens = [int(t) for t in np.random.default_rng(4).integers(0, SMALL.vocab_size, 300)]
    assert len(tokens) > 2 * PREFILL_CHUNK
    whole = model.forward(tokens, model.new_cache())
    cache = model.new_cache()
    chunked = model.prefill(tokens, cache)
    assert chunked is not None and cache.length == 300
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-4)


def test_grouped_query_attention_equals_attention_with_repeated_kv_heads() -> None:
    gqa = random_tensors(SMALL, seed=5)
    group = SMALL.n_heads // SMALL.n_kv_heads
    mha_config = LlamaConfig(**{**SMALL.__dict__, "n_kv_heads": SMALL.n_heads})
    mha = dict(gqa)
    for i in range(SMALL.n_layers):
        for name in ("attn_k", "attn_v"):
            w = gqa[f"blk.{i}.{name}.weight"].reshape(SMALL.n_kv_heads, SMALL.head_dim, -1)
            mha[f"blk.{i}.{name}.weight"] = np.repeat(w, group, axis=0).reshape(-1, SMALL.dim)
    tokens = [3, 14, 15, 9, 2, 6, 5, 35]
    a = Llama.from_tensors(SMALL, gqa.get).forward(tokens, Llama.random(SMALL).new_cache(),
                                                   all_logits=True)
    b_model = Llama.from_tensors(mha_config, mha.get)
    b = b_model.forward(tokens, b_model.new_cache(), all_logits=True)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_head_is_tied_to_the_embedding_only_without_an_output_tensor() -> None:
    tensors = random_tensors(SMALL, seed=0)
    assert Llama.from_tensors(SMALL, tensors.get).weights.output is tensors["token_embd.weight"]
    own = np.zeros((SMALL.vocab_size, SMALL.dim), dtype=np.float32)
    with_head = Llama.from_tensors(SMALL, {**tensors, "output.weight": own}.get)
    assert with_head.weights.output is own
    logits = with_head.forward([1, 2], with_head.new_cache())
    assert not logits.any()


def test_a_missing_or_misshapen_tensor_is_refused() -> None:
    tensors = random_tensors(SMALL, seed=0)
    del tensors["blk.1.ffn_up.weight"]
    with pytest.raises(ValueError, match=r"blk\.1\.ffn_up\.weight"):
        Llama.from_tensors(SMALL, tensors.get)
    tensors = random_tensors(SMALL, seed=0)
    tensors["blk.0.ffn_down.weight"] = tensors["blk.0.ffn_down.weight"][:, :10]
    with pytest.raises(ValueError, match="shape"):
        Llama.from_tensors(SMALL, tensors.get)


def test_generate_ends_at_max_tokens_at_a_full_cache_and_on_stop() -> None:
    model = Llama.random(SMALL, seed=1)
    assert len(list(model.generate([1, 2, 3], model.new_cache(), max_tokens=7,
                                   sample=greedy))) == 7
    small_cache = model.new_cache(10)
    tokens = list(model.generate([1, 2, 3], small_cache, max_tokens=50, sample=greedy))
    assert len(tokens) == 7 and small_cache.length == 9  # 3 + 7 = the capacity

    calls = count()
    stopped = list(model.generate([1, 2, 3], model.new_cache(), max_tokens=50, sample=greedy,
                                  stop=lambda: next(calls) >= 4))
    assert len(stopped) == 3  # checked before prefill and before each of the steps
    with pytest.raises(ValueError, match="no room"):
        list(model.generate(list(range(10)), model.new_cache(10), max_tokens=1, sample=greedy))


def test_sampler_greedy_top_p_and_seed() -> None:
    logits = np.log(np.array([1.0, 2.0, 4.0], dtype=np.float32))
    assert Sampler(0.0)(logits) == 2
    assert {Sampler(1.0, top_p=0.5, seed=s)(logits) for s in range(50)} == {2}
    assert 0 not in {Sampler(1.0, top_p=0.8, seed=s)(logits) for s in range(200)}

    sampler = Sampler(1.0, top_p=1.0, seed=11)
    draws = np.bincount([sampler(logits) for _ in range(7000)], minlength=3) / 7000
    np.testing.assert_allclose(draws, [1 / 7, 2 / 7, 4 / 7], atol=0.02)
    runs = [Sampler(0.8, seed=seed) for seed in (5, 5, 6)]
    draws_by_run = [[run(logits) for _ in range(30)] for run in runs]
    assert draws_by_run[0] == draws_by_run[1] != draws_by_run[2]


def repeats(tokens: list[int], n: int) -> int:
    """How many n-token sequences of ``tokens`` occurred before."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


def test_greedy_decoding_loops_without_repetition_control_and_not_with_it() -> None:
    model = Llama.random(SMALL, seed=1)
    plain = list(model.generate([1, 2, 3], model.new_cache(), max_tokens=150, sample=greedy))
    assert repeats(plain, 8) > 20  # a loop: the failure the control exists for
    controlled = Sampler(0.0, no_repeat_ngram=4)
    tokens = list(model.generate([1, 2, 3], model.new_cache(), max_tokens=150, sample=controlled))
    assert len(tokens) == 150 and repeats(tokens, 4) == 0
    assert controlled.history == tokens
    sampled = Sampler(0.7, seed=3, no_repeat_ngram=3, repetition_penalty=1.3)
    tokens = list(model.generate([1, 2, 3], model.new_cache(), max_tokens=100, sample=sampled))
    assert repeats(tokens, 3) == 0


def test_repetition_penalty_lowers_recent_tokens_only() -> None:
    logits = np.array([2.0, 1.9, -1.0, -1.05], dtype=np.float32)
    sampler = Sampler(0.0, repetition_penalty=1.1, penalty_window=1)
    assert [sampler(logits) for _ in range(3)] == [0, 1, 0]  # 2.0 / 1.1 < 1.9, and back
    negative = Sampler(0.0, repetition_penalty=1.1)
    negative.history = [3]
    assert negative(np.array([-5.0, -5.0, -1.0, -0.95], dtype=np.float32)) == 2
    assert Sampler(0.0)(logits) == 0  # off by default: greedy is greedy
    with pytest.raises(ValueError):
        Sampler(0.0, no_repeat_ngram=1)
    with pytest.raises(ValueError):
        Sampler(0.0, repetition_penalty=0.9)


# --- the real model against transformers -------------------------------------------------------


@pytest.mark.slow
def test_config_read_from_the_gguf_metadata() -> None:
    loaded = smollm2()
    config = loaded.llama.config
    assert (config.n_layers, config.dim, config.n_heads, config.n_kv_heads) == (30, 576, 9, 3)
    assert config.rope_theta == 100000.0
    assert config.context_length == 8192 and config.norm_eps == pytest.approx(1e-5)
    assert loaded.llama.weights.output is loaded.llama.weights.embedding  # tied


@pytest.mark.slow
def test_logits_match_transformers_on_every_reference_step() -> None:
    loaded = smollm2()
    model = loaded.llama
    cache = model.new_cache(256)
    for conversation in REFERENCE["conversations"]:
        prompt = loaded.vocab.chat_prompt(Turn(m["role"], m["content"]) for m in
                                          conversation["messages"])
        assert prompt == conversation["prompt_ids"]
        cache.reset()
        # Teacher forcing: the prompt plus transformers' greedy answer, all positions at once.
        logits = model.forward(prompt + conversation["greedy"][:-1], cache, all_logits=True)
        for step, row in zip(conversation["steps"], logits[len(prompt) - 1 :], strict=True):
            np.testing.assert_allclose(row[step["ids"]], step["logits"], atol=2e-3)
            assert int(np.argmax(row)) == step["ids"][0]


@pytest.mark.slow
def test_greedy_generation_reproduces_transformers() -> None:
    loaded = smollm2()
    cache = loaded.llama.new_cache(256)
    for conversation in REFERENCE["conversations"]:
        tokens = list(loaded.llama.generate(conversation["prompt_ids"], cache,
                                            max_tokens=len(conversation["greedy"]),
                                            sample=greedy))
        assert tokens == conversation["greedy"]
        assert loaded.vocab.decode(tokens, skip_control=False) == conversation["greedy_text"]
