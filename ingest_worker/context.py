"""What a document says about itself (:class:`parley.contracts.DocumentContext`): its title, the
organisation it is by or about (entity) and its reporting period, read from the content: a
filing's cover page ("For the quarterly period ended July 1, 2023", the line above "(Exact name of
registrant ...)"), the running headers and footers that name the company and period on every page
("Apple Inc. | Q3 2023 Form 10-Q | 4"), a report's or deck's title page, a DOCX's core properties
and first heading. The file name is the last resort, for the title and a period label only: real
users' file names are often meaningless. Pure functions, no I/O beyond reading a DOCX's small
property parts from bytes given.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence

from lxml import etree

from ingest_worker.chunking import BlockLike
from parley.contracts import DocumentContext
from parley.periods import DATE, FISCAL_YEAR, MONTH, QUARTER, parse_date, quarter_label, year_of

_PERIOD_ENDED = re.compile(
    rf"(?:period|quarter|year|months|weeks)\s+ended[:\s]+({MONTH}\.?\s+\d{{1,2}},?\s+(?:19|20)\d\d)",
    re.IGNORECASE,
)
_AS_OF = re.compile(
    rf"\bas\s+(?:of|at)\s+({MONTH}\.?\s+\d{{1,2}},?\s+(?:19|20)\d\d)", re.IGNORECASE
)
_FORM = re.compile(r"\bform\s+(10-q|10-k|8-k|20-f|40-f|6-k|s-1|def\s*14a)\b", re.IGNORECASE)
_REPORT_KIND = re.compile(
    r"\b(quarterly report|annual report|interim report|half[- ]year(?:ly)? report|"
    r"earnings release|press release|investor presentation|shareholder letter|"
    r"financial statements)\b",
    re.IGNORECASE,
)
_REGISTRANT = re.compile(r"\(\s*exact\s+name\s+of\s+registrant", re.IGNORECASE)
# As written or in capitals ("MICROSOFT CORPORATION", "AMAZON.COM, INC.").
_SUFFIX = (
    r"(?:Inc|Incorporated|Corp|Corporation|Company|Co|Ltd|Limited|LLC|L\.L\.C|LLP|LP|plc|PLC|"
    r"GmbH|AG|SE|S\.A|SA|N\.V|NV|B\.V|Holdings|Group|Bank|Trust|INC|INCORPORATED|CORP|"
    r"CORPORATION|COMPANY|CO|LTD|LIMITED|HOLDINGS|GROUP|BANK|TRUST)\.?"
)
# A filing's cover: the registrant's name is the line after its commission file number.
_FILE_NUMBER = re.compile(r"^commission\s+file\s+(?:number|no\.?)\b", re.IGNORECASE)
_WORD = r"[A-Z][\w&'’.-]*|&|and|of|the"
_ENTITY = re.compile(rf"\b((?:{_WORD})(?:[ \t]+(?:{_WORD})){{0,5}}),?[ \t]+{_SUFFIX}(?![\w])")


def document_context(
    blocks: Sequence[BlockLike],
    filename: str,
    properties: Mapping[str, str] | None = None,
    *,
    stored_title: str | None = None,
) -> DocumentContext:
    """The context of a document from its blocks (reading order), its file name and, for a
    DOCX, its properties (:func:`docx_properties`: ``title``, ``company``...); for a PDF, the
    title its metadata stores (``stored_title``), used where it reads as a title: tools store
    their defaults and ids there ("Binder1.pdf", "0000320193-23-000077", "Model")."""
    props = {
        k.lower(): " ".join(v.split()) for k, v in (properties or {}).items() if v and v.strip()
    }
    first = _first_text(blocks, chars=6000)
    repeated = _repeated_lines(blocks)
    title = _title(blocks, first, props, repeated, _readable(stored_title, filename))
    entity = _entity(first, repeated, props)
    period_end = _period_end(first)
    period = _period_label(first, repeated, filename) or _most_said_quarter(blocks)
    if title is None:
        title = posixpath.splitext(posixpath.basename(filename))[0] or None
    return DocumentContext(
        title=_short(title, 200), entity=_short(entity, 200), period=period, period_end=period_end
    )


def _short(text: str | None, limit: int) -> str | None:
    return " ".join(text.split())[:limit] or None if text else None


def _first_text(blocks: Sequence[BlockLike], *, chars: int) -> str:
    out: list[str] = []
    size = 0
    for b in blocks:
        if b.kind in ("comment", "footnote", "endnote"):
            continue
        out.append(b.text)
        size += len(b.text)
        if size >= chars:
            break
    return "\n".join(out)[:chars]


def _repeated_lines(blocks: Sequence[BlockLike]) -> list[str]:
    """Lines that start or end several pages (running headers and footers), page numbers
    removed, most frequent first."""
    counts: Counter[str] = Counter()
    pages = 0
    for b in blocks:
        if b.kind in ("header", "footer"):
            for line in b.text.splitlines():
                counts[_no_page_number(line)] += 3
            continue
        if b.kind != "page":
            continue
        pages += 1
        lines = [ln.strip() for ln in b.text.splitlines() if ln.strip()]
        for line in {*lines[:2], *lines[-2:]}:
            counts[_no_page_number(line)] += 1
    floor = max(3, pages // 4)
    return [line for line, n in counts.most_common() if n >= floor and line]


def _no_page_number(line: str) -> str:
    line = re.sub(
        r"(?:\|\s*)?\b(?:page\s+)?\d{1,4}(?:\s+of\s+\d{1,4})?\s*$", "", line.strip(), flags=re.I
    )
    # "Page 5 of 48 Instructions for Form 1040NR": the number leads.
    line = re.sub(r"^page\s+\d{1,4}(?:\s+of\s+\d{1,4})?\b", "", line, flags=re.I)
    return line.strip(" |-–—·")


def _readable(title: str | None, filename: str) -> str | None:
    """``title`` where it names the document: two words or more, one of three letters at least,
    not a file name, not a tool's default."""
    if not title:
        return None
    title = " ".join(title.split())
    stem = posixpath.splitext(posixpath.basename(filename))[0]
    if (len(title.split()) < 2 or not re.search(r"[^\W\d_]{3}", title) or _FILE_NAME.search(title)
            or _plain(title) == _plain(stem) or _TOOL_DEFAULT.match(title)):
        return None
    return title


def _plain(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


_FILE_NAME = re.compile(r"\.[A-Za-z0-9]{2,4}$")
_TOOL_DEFAULT = re.compile(r"(?:microsoft \w+ - |untitled\b|document\d*$|presentation\d*$)",
                           re.IGNORECASE)
# Printers' marks and form furniture, not a title: "Userid: ________ DTD INSTR04 ... ❏ Draft".
_NOT_A_TITLE = re.compile(r"__|[❏☐□]")


def _title(
    blocks: Sequence[BlockLike],
    first: str,
    props: Mapping[str, str],
    repeated: Sequence[str],
    stored: str | None,
) -> str | None:
    if props.get("title"):
        return props["title"][:120]
    form = _FORM.search(first)
    kind = _REPORT_KIND.search(first)
    if form:
        name = f"Form {form.group(1).upper()}"
        return f"{name} ({kind.group(1).lower()})" if kind else name
    if stored:
        return stored[:120]
    for b in blocks[:20]:
        if b.heading and len(b.heading) <= 120:
            if kind and 0 <= kind.start() < first.find(b.heading):
                # "Tidewater Robotics Group / Interim Report for the quarter ended ..." in plain
                # paragraphs, then a first heading "Condensed Consolidated Statements of
                # Operations": the cover says what the document is, the heading one section.
                return kind.group(1).capitalize()
            return b.heading
    if kind:
        return kind.group(1).capitalize()
    running = set(repeated)
    for line in first.splitlines():
        line = line.strip()
        if (3 <= len(line) <= 100 and re.search(r"[A-Za-z]{3}", line) and not DATE.search(line)
                and not _NOT_A_TITLE.search(line) and _no_page_number(line) not in running):
            return line
    return None


def _entity(first: str, repeated: Sequence[str], props: Mapping[str, str]) -> str | None:
    lines = [ln.strip() for ln in first.splitlines()]
    # A filing's cover: the line just above "(Exact name of registrant as specified ...)".
    for i, line in enumerate(lines):
        if _REGISTRANT.search(line):
            head = _REGISTRANT.split(line)[0].strip()
            if head:
                return head
            for prev in reversed(lines[:i]):
                if prev:
                    return prev
    # A cover without that line ("Commission File Number 001-37845" / "MICROSOFT CORPORATION").
    for i, line in enumerate(lines[:-1]):
        if _FILE_NUMBER.match(line) and (name := _ENTITY.fullmatch(lines[i + 1])):
            return _clean_entity(name.group(0))
    if props.get("company"):
        return props["company"]
    # A running header/footer naming a company ("Apple Inc. | Q3 2023 Form 10-Q | 1").
    for line in repeated:
        found = _ENTITY.search(line)
        if found:
            return _clean_entity(found.group(0))
    counts = Counter(_clean_entity(m.group(0)) for m in _ENTITY.finditer(first))
    counts = Counter(
        {k: v for k, v in counts.items() if k and not k.lower().startswith(("the ", "and ", "of "))}
    )
    if counts:
        return counts.most_common(1)[0][0]
    return None


def _clean_entity(name: str) -> str:
    name = " ".join(name.split()).strip(" ,")
    return re.sub(r"^(?:The|and|of)\s+", "", name) if len(name.split()) > 2 else name


def _period_end(first: str) -> str | None:
    for pattern in (_PERIOD_ENDED, _AS_OF):
        for m in pattern.finditer(first):
            date = parse_date(m.group(1))
            if date is not None:
                return date.isoformat()
    date = parse_date(first[:1500])
    return date.isoformat() if date else None


def _period_label(first: str, repeated: Sequence[str], filename: str) -> str | None:
    """A fiscal period label ("Q3 2023", "FY 2022") the document gives itself: in its running
    headers/footers first (they name the document's own period), then its first text, then the
    file name."""
    # A file name's words may be joined by "_" or "-" ("msft_2023_q1.pdf").
    named = re.sub(r"[_-]+", " ", posixpath.basename(filename))
    for source in (*repeated[:6], first[:3000], named):
        label = quarter_label(source)
        if label:
            return label
    for source in (*repeated[:6], first[:3000]):
        m = FISCAL_YEAR.search(source)
        if m:
            return f"FY {year_of(m.group(1))}"
    return None


# How often a quarter must be named, and how much more often than any other, to be the
# document's own when nothing else says which it is.
QUARTER_MENTIONS = 3


def _most_said_quarter(blocks: Sequence[BlockLike]) -> str | None:
    """The quarter a report names most ("the first quarter of fiscal year 2023" in a filing's
    discussion, which also names the quarter a year before): for a report whose cover, running
    lines and file name say none. None when no quarter is named :data:`QUARTER_MENTIONS` times
    and twice as often as the next."""
    counts: Counter[str] = Counter()
    for b in blocks:
        for m in QUARTER.finditer(b.text):
            label = quarter_label(m.group(0))
            if label:
                counts[label] += 1
    ranked = counts.most_common(2)
    if not ranked or ranked[0][1] < QUARTER_MENTIONS:
        return None
    if len(ranked) > 1 and ranked[0][1] < 2 * ranked[1][1]:
        return None
    return ranked[0][0]


_PROPS = {"docProps/core.xml": 64 * 1024, "docProps/app.xml": 256 * 1024}


def docx_properties(data: bytes | str) -> dict[str, str]:
    """A DOCX's ``title``, ``subject``, ``creator`` (core properties) and ``company`` (extended
    properties), from its bytes or its file's path; {} for anything that is not a readable
    DOCX. The parts are read only when small (a zip bomb cannot grow here) and parsed without
    DTDs, entities or network."""
    found: dict[str, str] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as archive:
            for part, limit in _PROPS.items():
                try:
                    info = archive.getinfo(part)
                except KeyError:
                    continue
                if info.file_size > limit:
                    continue
                root = etree.fromstring(archive.read(info), _PARSER)
                for element in root:
                    name = etree.QName(element).localname.lower()
                    if name in ("title", "subject", "creator", "company") and element.text:
                        text = " ".join(element.text.split())
                        if text:
                            found[name] = text
    except (zipfile.BadZipFile, etree.XMLSyntaxError, ValueError, OSError):
        return {}
    return found


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
