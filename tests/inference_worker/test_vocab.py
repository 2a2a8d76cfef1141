"""The tokenizer rebuilt from GGUF metadata, the ChatML template and incremental decoding."""

from __future__ import annotations

import pytest

from inference_worker.vocab import DEFAULT_SYSTEM, TextStream, Turn, Vocab
from tests.inference_worker.smollm2 import REFERENCE, smollm2

TEXT = "héllo wörld 🙂 日本語 — “ok”"


def test_byte_vocabulary_round_trips_any_text() -> None:
    vocab = Vocab.bytes_only()
    ids = vocab.encode(TEXT)
    assert len(ids) == len(TEXT.encode("utf-8"))
    assert vocab.decode(ids) == TEXT
    assert vocab.tokenizer.decode(ids) == TEXT


def test_incremental_decoding_never_splits_a_character() -> None:
    vocab = Vocab.bytes_only()
    stream = TextStream(vocab)
    pieces = [stream.feed(i) for i in vocab.encode(TEXT)]
    assert "".join(pieces) + stream.finish() == TEXT
    assert all("\ufffd" not in p for p in pieces)
    # The 4 bytes of the emoji arrive one per token: text appears only with the last one.
    emoji = TEXT.index("🙂")
    start = len(TEXT[:emoji].encode("utf-8"))
    assert pieces[start : start + 4] == ["", "", "", "🙂"]


def test_incremental_decoding_marks_invalid_and_unfinished_bytes() -> None:
    vocab = Vocab.bytes_only()
    byte_id = {b: 3 + b for b in range(256)}  # after the three control tokens, in byte order
    assert vocab.encode("a") == [byte_id[ord("a")]]
    stream = TextStream(vocab)
    out = stream.feed(byte_id[0xFF]) + stream.feed(byte_id[ord("a")]) + stream.feed(byte_id[0xE6])
    assert out == "\ufffda"
    assert stream.finish() == "\ufffd"  # a truncated 3-byte sequence at the end
    assert stream.feed(vocab.im_end_id) == ""  # control tokens add no text


def test_control_token_strings_in_a_message_stay_text() -> None:
    vocab = Vocab.bytes_only()
    ids = vocab.encode("a<|im_end|>b")
    assert vocab.im_end_id not in ids and vocab.decode(ids) == "a<|im_end|>b"
    assert vocab.encode("a<|im_end|>b", specials=True) == [
        *vocab.encode("a"), vocab.im_end_id, *vocab.encode("b")
    ]


def test_chat_template_is_chatml_with_the_default_system_message() -> None:
    vocab = Vocab.bytes_only()
    ids = vocab.chat_prompt([Turn("user", "Hi?")])
    assert vocab.decode(ids, skip_control=False) == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    )
    own = vocab.chat_prompt([Turn("system", "S"), Turn("user", "U"), Turn("assistant", "A")])
    assert vocab.decode(own, skip_control=False).startswith("<|im_start|>system\nS<|im_end|>")
    assert vocab.stop_ids == {vocab.im_end_id, 0}


def test_a_vocabulary_without_chatml_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="ChatML"):
        Vocab(["a", "b"], [], [1, 1], eos_id=0)


@pytest.mark.slow
def test_real_tokenizer_and_template_match_transformers() -> None:
    vocab = smollm2().vocab
    assert vocab.size == 49152 and vocab.eos_id == vocab.im_end_id == 2
    for sample in REFERENCE["texts"]:
        assert vocab.encode(sample["text"], specials=True) == sample["ids"], sample["text"]
        assert vocab.decode(sample["ids"], skip_control=False) == sample["text"]
    for conversation in REFERENCE["conversations"]:
        turns = [Turn(m["role"], m["content"]) for m in conversation["messages"]]
        assert vocab.chat_prompt(turns) == conversation["prompt_ids"]
    stream = TextStream(vocab)
    ids = vocab.encode(TEXT)
    assert "".join(stream.feed(i) for i in ids) + stream.finish() == TEXT
