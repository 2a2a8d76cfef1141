"""Document context from content: the fictional quarterly reports (several companies and
quarters with one layout and meaningless file names) through the real extractor, DOCX core
properties and headings, a deck's title page."""

from __future__ import annotations

import io
import zipfile

import pytest

from ingest_worker.context import document_context, docx_properties
from ingest_worker.extract.dispatch import extract
from ingest_worker.extract.types import Block
from parley.contracts import DocumentContext
from tests.fixtures import documents, filings


def context_of_pdf(data: bytes, filename: str) -> DocumentContext:
    extraction = extract(data, filename, max_pages=50, max_bytes=10**8)
    return document_context(extraction.blocks, filename)


@pytest.mark.parametrize("report", filings.reports(), ids=lambda r: f"{r.short}-{r.label}")
def test_a_filing_says_who_and_when_whatever_its_file_name(report: filings.Report) -> None:
    context = context_of_pdf(report.pdf(), report.filename)
    assert context.entity == report.registrant  # Fabrikam's in capitals, as its cover has it
    assert context.period_end == report.period_end.isoformat()
    # From the running footer, or from "the third quarter of fiscal 2023" in the text.
    assert context.period == report.label
    assert context.title is not None and "10-Q" in context.title
    assert report.filename.removesuffix(".pdf") not in (context.title or "")


def test_a_fiscal_year_that_is_not_the_calendar_year_is_the_documents_own() -> None:
    fabrikam = next(r for r in filings.reports() if r.short == "Fabrikam" and r.quarter == 1)
    context = context_of_pdf(fabrikam.pdf(), "upload.pdf")
    # Its fiscal Q1 2024 ended in September 2023: the label is what the report says.
    assert (context.period, context.period_end) == ("Q1 2024", "2023-09-30")


def test_a_cover_without_the_registrant_line_names_the_company_after_its_file_number() -> None:
    # Some filers' covers put the name in capitals after the file number, with no "(Exact name
    # of registrant ...)" line under it: the entity had been unknown.
    cover = documents.pdf([
        "UNITED STATES\nSECURITIES AND EXCHANGE COMMISSION\nWashington, D.C. 20549\nFORM 10-Q\n"
        "QUARTERLY REPORT PURSUANT TO SECTION 13 OR 15(d) OF THE SECURITIES EXCHANGE ACT OF 1934\n"
        "For the Quarterly Period Ended September 30, 2026\nCommission File Number 001-12345\n"
        "WINGTIP TOYS CORPORATION\nWASHINGTON 91-1234567\n(STATE OF INCORPORATION) (I.R.S. ID)",
        "Part I. Financial Information\nItem 1. Financial Statements",
    ])
    context = context_of_pdf(cover, "upload.pdf")
    assert (context.entity, context.period, context.period_end) == (
        "WINGTIP TOYS CORPORATION", None, "2026-09-30")
    # The period from the file name, year first or words joined by "_".
    for name in ("2027 Q1 WTT.pdf", "wtt_10q_2027_q1.pdf"):
        assert context_of_pdf(cover, name).period == "Q1 2027", name


def test_the_quarter_a_report_names_most_is_its_own_when_nothing_else_says() -> None:
    # Past the cover and its first 3,000 characters, as in a filing's discussion.
    cover = Block("FORM 10-Q\nFor the Quarterly Period Ended September 30, 2026\n"
                  "Commission File Number 001-12345\nWINGTIP TOYS CORPORATION\n" + "Index. " * 500,
                  1, None, "paragraph")

    def report(*quarters: str) -> list[Block]:
        return [cover, *(Block(f"Revenue in the {q} of fiscal year 2027 grew.", 9, None,
                               "paragraph") for q in quarters)]

    assert document_context(report("first quarter", "first quarter", "second quarter",
                                   "first quarter"), "upload.pdf").period == "Q1 2027"
    # Named only twice, or not twice as often as another quarter: no label.
    for quarters in (("first quarter", "first quarter"),
                     ("first quarter",) * 3 + ("second quarter",) * 2):
        assert document_context(report(*quarters), "upload.pdf").period is None, quarters


def test_a_deck_title_page() -> None:
    deck = documents.pdf([
        "Litware Holdings plc\nInvestor Presentation\nFiscal 2025 Results\nMarch 14, 2025",
        "Agenda\nHighlights of the year\nOutlook",
    ])
    context = context_of_pdf(deck, "deck-final-v3.pdf")
    assert context.entity == "Litware Holdings plc"
    assert context.title == "Investor presentation"
    assert context.period == "FY 2025"
    assert context.period_end == "2025-03-14"


def with_properties(docx: bytes, title: str, company: str) -> bytes:
    """The DOCX with docProps/core.xml (title) and docProps/app.xml (company) added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("docProps/core.xml", (
            '<?xml version="1.0"?><cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/'
            'package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f"<dc:title>{title}</dc:title><dc:creator>J. Doe</dc:creator></cp:coreProperties>"))
        dst.writestr("docProps/app.xml", (
            '<?xml version="1.0"?><Properties xmlns="http://schemas.openxmlformats.org/'
            f'officeDocument/2006/extended-properties"><Company>{company}</Company></Properties>'))
    return out.getvalue()


def test_docx_core_properties_name_title_and_company() -> None:
    body = documents.docx([
        documents.Heading("Minutes", 1), "The board approved the budget for 2025."
    ])
    data = with_properties(body, "Board meeting, 12 May 2025", "Tailspin Toys")
    assert docx_properties(data) == {
        "title": "Board meeting, 12 May 2025", "creator": "J. Doe", "company": "Tailspin Toys"
    }
    extraction = extract(data, "doc1.docx", max_pages=50, max_bytes=10**8)
    context = document_context(extraction.blocks, "doc1.docx", docx_properties(data))
    assert (context.title, context.entity) == ("Board meeting, 12 May 2025", "Tailspin Toys")


def test_a_docx_without_properties_is_titled_by_its_first_heading() -> None:
    data = documents.docx([
        documents.Heading("Wingtip Toys Inc. annual safety review", 1),
        "Prepared for the fiscal year ended December 31, 2024 by the safety office.",
    ])
    assert docx_properties(data) == {}
    extraction = extract(data, "x.docx", max_pages=50, max_bytes=10**8)
    context = document_context(extraction.blocks, "x.docx")
    assert context.title == "Wingtip Toys Inc. annual safety review"
    assert context.entity == "Wingtip Toys Inc."
    assert context.period_end == "2024-12-31"


def test_a_docx_cover_in_plain_paragraphs_says_what_the_document_is() -> None:
    # The cover names the report; the first heading is a section of it (one of the statements).
    data = documents.docx([
        "Tidewater Robotics Group",
        "Interim Report for the quarter ended September 27, 2025 (Q3 2025)",
        documents.Heading("Condensed Consolidated Statements of Operations (in thousands)", 1),
        "Revenue rose.",
    ])
    extraction = extract(data, "x.docx", max_pages=50, max_bytes=10**8)
    context = document_context(extraction.blocks, "x.docx")
    assert context.title == "Interim report"
    assert (context.period, context.period_end) == ("Q3 2025", "2025-09-27")


def test_what_the_content_does_not_say_stays_unknown_and_the_file_name_titles_it() -> None:
    blocks = [Block("12 34 56 78", 1, None, "page")]
    context = document_context(blocks, "folder/quarterly numbers Q2 2024.pdf")
    assert context.entity is None and context.period_end is None
    assert context.title == "quarterly numbers Q2 2024"
    assert context.period == "Q2 2024"  # the file name is the last resort


@pytest.mark.parametrize("data", [b"", b"%PDF-1.7 not a zip", b"PK\x03\x04broken"])
def test_docx_properties_of_anything_else_are_empty(data: bytes) -> None:
    assert docx_properties(data) == {}


def test_a_pdfs_stored_title_names_it_where_it_reads_as_a_title() -> None:
    page = "Userid: ________ DTD INSTR04 Leadpct: 0% Pt. size: 9.5 Draft Ok to Print\n" + (
        documents.lorem(200, seed=4))
    data = documents.with_title(documents.text_pdf([page]), "2007 Instruction 1040-NR")
    extraction = extract(data, "i1040nr.pdf", max_pages=50, max_bytes=10**8)
    assert extraction.title == "2007 Instruction 1040-NR"
    context = document_context(extraction.blocks, "i1040nr.pdf", stored_title=extraction.title)
    assert context.title == "2007 Instruction 1040-NR"


@pytest.mark.parametrize("stored", ["Binder1.pdf", "0000320193-23-000077", "Model",
                                    "Microsoft Word - memo.docx", "scan 0042", "Untitled 3"])
def test_a_tools_default_or_an_id_is_not_a_title(stored: str) -> None:
    blocks = [Block("Quarterly Safety Review\nEvery crane was inspected this quarter.", page=1,
                    heading=None, kind="page")]
    context = document_context(blocks, "scan_0042.pdf", stored_title=stored)
    assert context.title == "Quarterly Safety Review"


def test_printers_marks_and_running_headers_are_not_a_title() -> None:
    # The IRS's instructions: proof marks on the first page, then on every page a running
    # header and a note to the printer, before the text.
    def page(n: int) -> Block:
        marks = "Userid: ________ DTD INSTR04 Leadpct: 0% Pt. size: 9.5 Draft\n" if n == 1 else ""
        body = "\n".join(f"Section {n}.{i}\nWhat part {i} of page {n} says." for i in range(4))
        return Block(f"{marks}Page {n} of 6 Imaginary Instructions\nThe type and rule above "
                     f"prints on all proofs.\n{body}", page=n, heading=None, kind="page")

    blocks = [page(n) for n in range(1, 7)]
    assert document_context(blocks, "x.pdf").title == "Section 1.0"
