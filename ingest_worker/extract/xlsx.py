"""Excel (XLSX) with openpyxl in read-only mode (rows streamed, cached values of formulas).

Each sheet is a section (its name is the heading of its blocks). A sheet's first row of at least
two cells (title rows of one cell above it are kept as text) is its header row when all of its
cells are text, not numbers; every row after it is written with its header,
``Warehouse: Zephyr | City: Tromsø | Pallets: 4812``, so a chunk of rows stands on its own and a
question about one row finds it. A sheet without a header
row gives its rows as they are (cells joined with `` | ``). Empty rows are skipped; a row's
trailing empty cells are dropped. Dates are written ISO 8601, whole numbers without ``.0``. Hidden
sheets are read too. Reading stops at :data:`MAX_CELLS` cells (with a warning).
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Sequence
from typing import Any

from ingest_worker.extract.pptx import check_package
from ingest_worker.extract.types import Block, Extraction, ExtractionFailed, clean_text

MAX_CELLS = 2_000_000
#: Rows per block: a block is one table section of the chunker, cut at rows.
ROWS_PER_BLOCK = 200


def extract_xlsx(data: bytes, *, max_bytes: int) -> Extraction:
    """Extract every sheet; see the module docstring."""
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    check_package(data, max_bytes=max_bytes, what="Excel file")
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, KeyError, ValueError, TypeError, zipfile.BadZipFile) as error:
        raise ExtractionFailed(
            "malformed",
            f"damaged Excel file ({type(error).__name__}: {str(error)[:120]})",
            hint="open it in Excel and save it again",
        ) from None
    blocks: list[Block] = []
    warnings: list[str] = []
    cells = 0
    try:
        for sheet in book.worksheets:
            name = " ".join(str(sheet.title).split()) or "Sheet"
            rows: list[str] = []
            header: list[str] | None = None
            first = True  # no row of several cells seen yet: the header is the first one
            for values in sheet.iter_rows(values_only=True):
                cells += len(values)
                if cells > MAX_CELLS:
                    warnings.append(f"only the first {MAX_CELLS:,} cells were read")
                    break
                row = _cells(values)
                if not any(row):
                    continue
                if first and sum(1 for c in row if c) >= 2:
                    # The first row of several cells is the header when it is all text; rows of
                    # one cell above it (a title, a date) are read as they are.
                    first = False
                    if _is_header(row):
                        header = row
                        continue
                rows.append(_with_header(row, header))
            for start in range(0, len(rows), ROWS_PER_BLOCK):
                text = "\n".join(rows[start : start + ROWS_PER_BLOCK])
                blocks.append(Block(text=text, page=None, heading=name, kind="table"))
            if header is not None and not rows:
                blocks.append(Block(text=" | ".join(header), page=None, heading=name, kind="table"))
            if cells > MAX_CELLS:
                break
    finally:
        book.close()
    if not blocks:
        raise ExtractionFailed("empty", "the workbook's sheets are empty")
    return Extraction(
        kind="xlsx",
        pages=None,
        blocks=tuple(blocks),
        extractor="openpyxl",
        warnings=tuple(warnings),
    )


def _cells(values: Sequence[Any]) -> list[str]:
    row = [_value(v) for v in values]
    while row and not row[-1]:
        row.pop()
    return row


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="minutes").removesuffix(" 00:00")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return " ".join(clean_text(str(value)).split())


def _is_header(row: list[str]) -> bool:
    filled = [c for c in row if c]
    return len(filled) >= 2 and all(not _numeric(c) for c in filled)


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _with_header(row: list[str], header: list[str] | None) -> str:
    if header is None:
        return " | ".join(row)
    parts = []
    for index, cell in enumerate(row):
        if not cell:
            continue
        name = header[index] if index < len(header) and header[index] else ""
        parts.append(f"{name}: {cell}" if name else cell)
    return " | ".join(parts)
