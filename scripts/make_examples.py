"""Write the binary example documents in examples/ (Excel, PowerPoint, PDF, a scanned PDF) from
the text below, so they can be checked and changed as text. Run from the project root::

    python scripts/make_examples.py

The PDFs use the test suite's PDF writer (tests/fixtures/documents.py), which needs no PDF
library; the scan is pages of pixels with no text layer, for OCR.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures import documents as docs  # noqa: E402

OUT = ROOT / "examples"

SETTINGS = [
    ["Setting", "Default", "What it does"],
    ["PARLEY_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for queues, status and token streams"],
    ["PARLEY_CHROMA_URL", "http://127.0.0.1:8000", "the Chroma server that stores the chunks"],
    ["PARLEY_MAX_UPLOAD_BYTES", "104857600", "the largest file the portal accepts"],
    ["PARLEY_MAX_PAGES", "2000", "the most pages or slides a document may have"],
    ["PARLEY_CHUNK_TOKENS", "200", "the size of a chunk in tokens of the embedding model"],
    ["PARLEY_OCR", "local", "OCR of scans: local (RapidOCR), azure or off"],
    [
        "PARLEY_CHAT_BACKEND",
        "local",
        "the model that answers: local, azure-openai or openai-compatible",
    ],
]

SLIDES = [
    docs.Slide(
        title="Parley in one slide",
        body=["Upload documents", "Ask questions", "Get answers with citations"],
        notes="Parley is event-driven: every step hands work to the next through a queue.",
    ),
    docs.Slide(
        title="The workers",
        table=[
            ["Part", "What it does"],
            ["Ingest worker", "extracts text (with OCR for scans) and cuts it into chunks"],
            ["Embed worker", "turns chunks into vectors and stores them in Chroma"],
            ["Inference worker", "writes the answer token by token"],
            ["Chat gateway", "websocket, OpenAI-compatible API and the portal"],
        ],
        notes="On Kubernetes, KEDA scales each worker on the length of its queue.",
    ),
]

HANDBOOK = [
    "How a document travels through Parley\n\n"
    "A document uploaded through the portal or with parley ingest is stored in the blob store, "
    "and an ingest request is put on the ingest queue. Nothing is lost if a worker is down: the "
    "request waits on the queue until a worker takes it.",
    "Extraction\n\n"
    "The ingest worker reads the document in a child process with time and memory limits, so a "
    "hostile file costs one child process and never the worker. PDF text comes from pypdfium2; "
    "pages without a text layer are read by OCR.",
    "Answers\n\n"
    "The chat gateway embeds the question, finds the best chunks in Chroma and hands the numbered "
    "sources to an inference worker. The answer cites the sources it used as [1], [2] and so on.",
]

MEMO = (
    "MEMO\n"
    "To: everyone trying Parley\n"
    "Subject: scanned pages\n\n"
    "This page is a picture with no text layer. Parley reads it with OCR, so a question about "
    "the scanned memo finds this text. The memo was written on the first of March."
)


def main() -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Settings")
    for row in SETTINGS:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    (OUT / "settings.xlsx").write_bytes(out.getvalue())
    (OUT / "architecture.pptx").write_bytes(docs.pptx(SLIDES))
    (OUT / "handbook.pdf").write_bytes(docs.text_pdf(HANDBOOK))
    (OUT / "scanned-memo.pdf").write_bytes(docs.scanned_text_pdf([MEMO]))
    print(f"wrote {OUT}/settings.xlsx, architecture.pptx, handbook.pdf, scanned-memo.pdf")


if __name__ == "__main__":
    main()
