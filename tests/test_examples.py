"""The documents in examples/ (what the README's quick start ingests in a fresh clone) are each
the kind they claim and read as text a question can find."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.ocr import OcrOptions
from parley.filetypes import detect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "README.md": ("markdown", "one of each kind it reads"),
    "getting-started.md": ("markdown", "parley ingest examples --wait"),
    "formats.html": ("html", "RapidOCR on onnxruntime"),
    "failure-reasons.txt": ("text", "no_text_layer: the file is a scan"),
    "settings.xlsx": ("xlsx", "Setting: PARLEY_OCR | Default: local"),
    "architecture.pptx": ("pptx", "KEDA scales each worker"),
    "handbook.pdf": ("pdf", "a hostile file costs one child process"),
    "scanned-memo.pdf": ("pdf", "Parley reads it with OCR"),
}


def test_every_example_is_listed() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_example_reads_as_its_kind(name: str) -> None:
    kind, phrase = EXPECTED[name]
    data = (EXAMPLES / name).read_bytes()
    assert detect(data) == kind
    out = extract(data, name, max_pages=100, max_bytes=10_000_000, ocr=OcrOptions())
    whole = " ".join(" ".join(b.text for b in out.blocks).split())
    assert phrase in whole
    assert "Failure reasons" not in whole  # formats.html's navigation is not content
