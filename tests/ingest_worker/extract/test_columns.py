"""Pages set in columns are read column by column (ingest_worker/extract/columns.py), on generated
PDFs that draw their lines across the page as the IRS's instructions do; pages that are not
(a table of figures, columns drawn one after the other, one column) keep pdfium's own order."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import pypdfium2 as pdfium
import pytest

from ingest_worker.extract.columns import reading_order
from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.pdf import _glyphs
from tests.conftest import shared_path
from tests.fixtures import documents as docs
from tests.ingest_worker.extract.test_pdf import LIMITS

COLUMNS = (
    "Filing status decides which tax table applies. A nonresident alien who was married at the "
    "end of the year files as married filing separately, unless a tax treaty says otherwise. "
    "Residents of Canada and Mexico may claim their spouse.",
    "Wages earned in the United States are taxed at graduated rates. Scholarship grants for "
    "tuition are not taxable when the student is a candidate for a degree. Keep the Form 1042-S "
    "that the school sends.",
    "Returns are due on the fifteenth day of the sixth month after the tax year ends when no "
    "wages were withheld. An extension of six months is granted by filing Form 4868 before the "
    "due date.",
)
TITLE = "Instructions for the Imaginary Return, what is new this year"


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _string(text: str) -> bytes:
    return b"(" + text.encode("cp1252").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def columns_page(
    columns: Sequence[str], *, title: str = "", interleaved: bool = True, width: int = 30
) -> docs.PdfPage:
    """A page of ``columns`` side by side (Helvetica 9 pt, 180 pt apart) under a full-width
    ``title``: drawn line by line across the page (``interleaved``), as many real files are, or
    column by column."""
    wrapped = [_wrap(text, width) for text in columns]
    ops = [b"BT /F1 9 Tf"]
    if title:
        ops.append(b"1 0 0 1 40 740 Tm " + _string(title) + b" Tj")
    places = [(k, i) for k in range(len(columns)) for i in range(len(wrapped[k]))]
    if interleaved:
        places.sort(key=lambda place: (place[1], place[0]))
    for k, i in places:
        ops.append(b"1 0 0 1 %d %d Tm " % (40 + 180 * k, 710 - 11 * i)
                   + _string(wrapped[k][i] + " ") + b" Tj")
    ops.append(b"ET")
    return docs.PdfPage(extra=b"\n".join(ops))


def _flat(text: str) -> str:
    return " ".join(text.split())


def _text(page: docs.PdfPage) -> str:
    [block] = extract(docs.pdf([page]), "page.pdf", **LIMITS).blocks
    return block.text


def test_columns_drawn_across_the_page_are_read_one_after_the_other() -> None:
    text = _text(columns_page(COLUMNS, title=TITLE))
    assert _flat(text) == _flat(" ".join((TITLE, *COLUMNS)))
    # Each column's lines stay lines: a heading or a list item keeps its own line.
    assert text.splitlines()[1] == " ".join(_wrap(COLUMNS[0], 30)[0].split())


def test_pdfium_alone_interleaves_such_a_page() -> None:
    # What the columns reader is for: the drawing order mixes the three columns line by line.
    document = pdfium.PdfDocument(docs.pdf([columns_page(COLUMNS, title=TITLE)]))
    textpage = document[0].get_textpage()
    plain = _flat(textpage.get_text_range())
    assert _flat(" ".join(COLUMNS)) not in plain
    assert _wrap(COLUMNS[0], 30)[1] not in plain.split(_wrap(COLUMNS[0], 30)[0])[1][:40]
    # ... and the reader keeps every character of it, once.
    ordered = reading_order(_glyphs(textpage))
    assert ordered is not None
    assert Counter(re.sub(r"\s", "", ordered)) == Counter(re.sub(r"\s", "", plain))


def test_columns_drawn_one_after_the_other_keep_pdfiums_order() -> None:
    page = columns_page(COLUMNS, title=TITLE, interleaved=False)
    document = pdfium.PdfDocument(docs.pdf([page]))
    assert reading_order(_glyphs(document[0].get_textpage())) is None
    assert _flat(_text(page)) == _flat(" ".join((TITLE, *COLUMNS)))


def test_a_table_of_figures_keeps_its_rows() -> None:
    labels = ["Net sales", "Cost of sales", "Gross margin", "Research and development",
              "Selling, general and administrative", "Operating income", "Other income",
              "Income before taxes", "Provision for income taxes", "Net income",
              "Earnings per share basic", "Earnings per share diluted"]
    rows = [(label, f"{1000 + 37 * i:,}", f"{900 + 41 * i:,}", f"{5 + i} %")
            for i, label in enumerate(labels)]
    ops = [b"BT /F1 9 Tf"]
    for i, row in enumerate(rows):
        for k, cell in enumerate(row):
            ops.append(b"1 0 0 1 %d %d Tm " % ((40, 300, 400, 500)[k], 700 - 12 * i)
                       + _string(cell) + b" Tj")
    ops.append(b"ET")
    text = _text(docs.PdfPage(extra=b"\n".join(ops)))
    for label, *figures in rows:
        assert re.search(re.escape(label) + r"\s+" + r"\s+".join(map(re.escape, figures)), text)


def test_one_column_of_prose_is_unchanged() -> None:
    words = docs.lorem(400, seed=3)
    page = docs.PdfPage(text=words)
    document = pdfium.PdfDocument(docs.pdf([page]))
    assert reading_order(_glyphs(document[0].get_textpage())) is None
    assert _text(page).split() == words.split()


@pytest.mark.shared
def test_the_irs_instructions_read_in_columns() -> None:
    data = shared_path("corpus", "pdf", "i1040nr.pdf").read_bytes()
    pages = extract(data, "i1040nr.pdf", **LIMITS).blocks
    text = _flat(pages[4].text)
    # Page 5: before, "A dual-status year is one in which you you are taxed on income only
    # from U.S. taxpayer is a nonresident alien if the change status between nonresident ..."
    assert ("A dual-status year is one in which you change status between nonresident and "
            "resident alien. Different U.S. income tax rules apply to each status.") in text
    # The tax tables at the end (figures in many columns) keep their rows.
    assert re.search(r"\b15,000 15,050\b", _flat(" ".join(b.text for b in pages[34:])))
