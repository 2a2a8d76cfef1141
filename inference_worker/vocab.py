"""The tokenizer and chat template of a llama-family GGUF model, rebuilt from the file's metadata.

``tokenizer.ggml.tokens`` / ``merges`` / ``token_type`` become a byte-level BPE
:class:`tokenizers.Tokenizer` (the ``smollm`` pre-tokenizer: every digit on its own, then the GPT-2
split). Chat prompts are ChatML (``<|im_start|>role\\n...<|im_end|>\\n``), rendered exactly as the
model's Jinja template does, with one deliberate difference: text inside a message never turns into
control tokens (a user typing ``<|im_end|>`` gets those characters, not an end of turn).

Decoding goes through a table of each token's raw bytes, so a caller can stream bytes through an
incremental UTF-8 decoder and never split a multi-byte character (see :class:`TextStream`).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"

# GGUF token types (llama.cpp's llama_token_type).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@dataclass(frozen=True)
class Turn:
    """One chat message as the template sees it."""

    role: str
    content: str


class Vocab:
    """Token strings, merges and types -> encoder, byte decoder, chat template and stop ids.

    Thread-safe for concurrent encode/decode (the tokenizer is read-only after construction)."""

    def __init__(
        self,
        tokens: Sequence[str],
        merges: Sequence[str],
        token_types: Sequence[int],
        *,
        eos_id: int,
        bos_id: int | None = None,
    ) -> None:
        if len(tokens) != len(token_types):
            raise ValueError(f"{len(tokens)} tokens but {len(token_types)} token types")
        self.tokens = list(tokens)
        self.size = len(tokens)
        self.eos_id = eos_id
        self.bos_id = bos_id
        ids = {t: i for i, t in enumerate(self.tokens)}
        self.special_ids = {
            t: i for i, t in enumerate(self.tokens) if token_types[i] in (CONTROL, USER_DEFINED)
        }
        self.control_ids = frozenset(
            i for i, kind in enumerate(token_types) if kind in (CONTROL, UNUSED)
        )
        self.im_start_id = self._require(IM_START)
        self.im_end_id = self._require(IM_END)
        # The instruct model ends a turn with <|im_end|>; base-model habits end with <|endoftext|>.
        self.stop_ids = frozenset(
            i for i in (eos_id, self.im_end_id, self.special_ids.get(END_OF_TEXT)) if i is not None
        )

        pairs = [tuple(m.split(" ", 1)) for m in merges]
        bpe = models.BPE(vocab=ids, merges=pairs, fuse_unk=False)  # type: ignore[arg-type]
        tokenizer = Tokenizer(bpe)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in self.special_ids]
        )
        # Special-token strings inside text are text: only the template emits control tokens.
        tokenizer.encode_special_tokens = True
        self.tokenizer = tokenizer

        inverse = {c: b for b, c in byte_alphabet().items()}
        self._bytes: list[bytes] = []
        special = set(self.special_ids.values())
        for i, token in enumerate(self.tokens):
            if i in special or any(c not in inverse for c in token):
                self._bytes.append(token.encode("utf-8"))
            else:
                self._bytes.append(bytes(inverse[c] for c in token))
        self._special_split = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(self.special_ids, key=len, reverse=True))
            + ")"
        )

    def _require(self, token: str) -> int:
        if token not in self.special_ids:
            raise ValueError(f"the vocabulary has no {token} control token: not a ChatML model")
        return self.special_ids[token]

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_gguf_fields(cls, fields: dict[str, Any]) -> Vocab:
        """From GGUF metadata values (``{"tokenizer.ggml.tokens": [...], ...}``)."""
        model = fields.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(f"tokenizer.ggml.model is {model!r}: only byte-level BPE (gpt2)")
        return cls(
            fields["tokenizer.ggml.tokens"],
            fields["tokenizer.ggml.merges"],
            fields["tokenizer.ggml.token_type"],
            eos_id=int(fields["tokenizer.ggml.eos_token_id"]),
            bos_id=_optional_int(fields.get("tokenizer.ggml.bos_token_id")),
        )

    @classmethod
    def bytes_only(cls) -> Vocab:
        """A tiny vocabulary: the three ChatML control tokens and the 256 bytes, no merges.

        For random test models: any byte sequence is a valid output, including invalid UTF-8."""
        specials = [END_OF_TEXT, IM_START, IM_END]
        tokens = specials + [byte_alphabet()[b] for b in range(256)]
        types = [CONTROL] * len(specials) + [NORMAL] * 256
        return cls(tokens, [], types, eos_id=2, bos_id=1)

    # --- encoding ----------------------------------------------------------------------------

    def encode(self, text: str, *, specials: bool = False) -> list[int]:
        """Token ids of ``text``. With ``specials``, control-token strings in it become those
        tokens (as Hugging Face tokenizers do); without, they are plain text."""
        if not text:
            return []
        if not specials:
            return list(self.tokenizer.encode(text, add_special_tokens=False).ids)
        out: list[int] = []
        for part in self._special_split.split(text):
            if part in self.special_ids:
                out.append(self.special_ids[part])
            elif part:
                out.extend(self.tokenizer.encode(part, add_special_tokens=False).ids)
        return out

    def message_ids(self, role: str, content: str) -> list[int]:
        """``<|im_start|>role\\ncontent<|im_end|>\\n`` as ids."""
        return [
            self.im_start_id,
            *self.encode(f"{role}\n{content}"),
            self.im_end_id,
            *self.encode("\n"),
        ]

    def generation_prompt_ids(self) -> list[int]:
        """``<|im_start|>assistant\\n``: where the model's answer starts."""
        return [self.im_start_id, *self.encode("assistant\n")]

    def chat_turns(self, messages: Iterable[Turn]) -> list[Turn]:
        """The messages the template renders: a default system message first when none is."""
        turns = list(messages)
        if not turns or turns[0].role != "system":
            turns.insert(0, Turn("system", DEFAULT_SYSTEM))
        return turns

    def chat_prompt(self, messages: Iterable[Turn]) -> list[int]:
        """The whole prompt, ending with the generation prompt (``add_generation_prompt``)."""
        ids: list[int] = []
        for turn in self.chat_turns(messages):
            ids += self.message_ids(turn.role, turn.content)
        return ids + self.generation_prompt_ids()

    # --- decoding ----------------------------------------------------------------------------

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (a control token: its name in UTF-8)."""
        return self._bytes[token_id]

    def decode(self, ids: Iterable[int], *, skip_control: bool = True) -> str:
        """Text of ``ids``; invalid UTF-8 becomes U+FFFD."""
        data = b"".join(
            self._bytes[i] for i in ids if not (skip_control and i in self.control_ids)
        )
        return data.decode("utf-8", errors="replace")


class TextStream:
    """Incremental detokenisation: feed ids one by one, get text that never ends inside a UTF-8
    sequence (bytes of an unfinished character wait for the next token). Control tokens add no
    text. ``finish()`` returns what is left (an incomplete sequence as U+FFFD)."""

    def __init__(self, vocab: Vocab) -> None:
        self._vocab = vocab
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        if token_id in self._vocab.control_ids:
            return ""
        return str(self._decoder.decode(self._vocab.token_bytes(token_id)))

    def finish(self) -> str:
        return str(self._decoder.decode(b"", final=True))


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
