"""DOCX text extraction by walking the WordprocessingML itself (zipfile + lxml).

python-docx misses footnotes, endnotes, comments, text boxes and content nested in headers, repeats
merged cells, and raises ``KeyError`` on Strict OOXML; reading the XML directly covers all of these
with one walker. What comes out, in this order: the body (paragraphs; tables as one line per row
with `` | `` between cells, merged cells once; text boxes after the paragraph that anchors them),
then the headers and footers of every section (default, first and even; identical ones once), the
footnotes, the endnotes and the comments. Headings are paragraphs whose style (or direct
formatting) has an outline level, or whose style is a built-in heading or the title.

Both Transitional and Strict namespaces are read; the main part is found through the package
relationships (so a renamed ``word/document.xml`` works); a missing styles part only costs the
heading detection that needed it. Parsing is hardened: no DTDs, entities or network; the unpacked
size of the parts read is capped.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from lxml import etree

from ingest_worker.extract.ocr import Ocr, PictureReader
from ingest_worker.extract.types import Block, BlockKind, Extraction, ExtractionFailed, clean_text

_W = (
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "http://purl.oclc.org/ooxml/wordprocessingml/main",
)
_R = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "http://purl.oclc.org/ooxml/officeDocument/relationships",
)
_M = (
    "http://schemas.openxmlformats.org/officeDocument/2006/math",
    "http://purl.oclc.org/ooxml/officeDocument/math",
)
_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_PKG_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CONTENT_TYPES = "http://schemas.openxmlformats.org/package/2006/content-types"
_MAIN_CONTENT_TYPES = (
    "wordprocessingml.document.main+xml",
    "wordprocessingml.template.main+xml",
    "ms-word.document.macroEnabled.main+xml",
    "ms-word.template.macroEnabledTemplate.main+xml",
)
#: XML parts may unpack to this many times the upload limit (XML compresses ~10x), at most 512 MiB.
UNPACK_FACTOR = 20
UNPACK_CAP = 512 * 1024 * 1024
_HEADING_NAME = re.compile(r"^(heading\s*[1-9]|title)$", re.IGNORECASE)

log = logging.getLogger(__name__)


def _parser(*, recover: bool) -> etree.XMLParser:
    """A parser that resolves no entity, loads no DTD and reaches no network (no XXE)."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=recover,
    )


_PARSER = _parser(recover=False)
_RECOVERING_PARSER = _parser(recover=True)


def extract_docx(
    data: bytes, *, max_bytes: int, ocr: Ocr | None = None, max_pictures: int = 100
) -> Extraction:
    """Extract a DOCX package; see the module docstring for what is read and in which order.
    With ``ocr``, pictures in the body (paragraphs, tables, text boxes) are read and their text
    follows the paragraph or table that holds them (kind ``picture``, marked ``ocr``)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ExtractionFailed(
            "malformed",
            f"damaged DOCX: not a readable ZIP package ({str(error)[:120]})",
            hint="upload the file again, or save it anew from Word",
        ) from None
    with archive:
        package = _Package(archive, limit=min(UNPACK_FACTOR * max_bytes, UNPACK_CAP))
        main = package.main_part()
        root = package.xml(main)
        if root is None or etree.QName(root).localname != "document":
            raise ExtractionFailed("malformed", "damaged DOCX: the document part is unreadable")
        reader = PictureReader(ocr, max_pictures)
        walker = _Walker(package, main, w=etree.QName(root).namespace or _W[0], pictures=reader)
        walker.read(root)
    blocks = tuple(walker.blocks)
    if not blocks:
        if walker.pictures:
            if ocr is not None:
                raise ExtractionFailed(
                    "no_text_layer",
                    "DOCX holds pictures but no text, and OCR found none in them",
                    hint="the pictures may be photos or drawings, or too blurred to read",
                )
            raise ExtractionFailed(
                "no_text_layer",
                "DOCX holds pictures but no text",
                hint="if the pictures are scanned pages, run OCR on them",
            )
        raise ExtractionFailed("empty", "the DOCX has no text")
    extractor = "ooxml" + (f"+{ocr.engine.name}" if ocr is not None and reader.found else "")
    return Extraction(
        kind="docx",
        pages=None,
        blocks=blocks,
        extractor=extractor,
        warnings=(*package.warnings, *reader.warnings()),
    )


@dataclass
class _Package:
    archive: zipfile.ZipFile
    limit: int
    warnings: list[str] = field(default_factory=list)
    _unpacked: int = 0

    def __post_init__(self) -> None:
        # Part names are case-insensitive in OPC.
        self._names = {info.filename.lower(): info for info in self.archive.infolist()}

    def read(self, name: str) -> bytes | None:
        info = self._names.get(name.lstrip("/").lower())
        if info is None:
            return None
        if self._unpacked + info.file_size > self.limit:
            raise ExtractionFailed("too_large", "DOCX unpacks to more than the size limit")
        try:
            with self.archive.open(info) as handle:
                # The declared size can lie; never read past the budget.
                payload = handle.read(self.limit - self._unpacked + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
            self.warnings.append(f"part {info.filename} is damaged and was skipped")
            log.info("docx part %s unreadable: %s", info.filename, error)
            return None
        self._unpacked += len(payload)
        if self._unpacked > self.limit:
            raise ExtractionFailed("too_large", "DOCX unpacks to more than the size limit")
        return payload

    def xml(self, name: str) -> etree._Element | None:
        payload = self.read(name)
        if payload is None:
            return None
        try:
            return etree.fromstring(payload, _PARSER)
        except etree.XMLSyntaxError:
            pass
        try:
            root = etree.fromstring(payload, _RECOVERING_PARSER)
        except etree.XMLSyntaxError:
            root = None
        if root is None:
            self.warnings.append(f"part {name} is not valid XML and was skipped")
            return None
        self.warnings.append(f"part {name} has invalid XML; its readable text was kept")
        return root

    def rels(self, part: str) -> dict[str, tuple[str, str]]:
        """Relationship id -> (type, target part name) for a part ("" for the package)."""
        folder, base = posixpath.split(part)
        root = self.xml(posixpath.join(folder, "_rels", f"{base}.rels"))
        found: dict[str, tuple[str, str]] = {}
        if root is None:
            return found
        for rel in root.iter(f"{{{_PKG_RELS}}}Relationship"):
            target = rel.get("Target") or ""
            if rel.get("TargetMode") == "External" or not target:
                continue
            resolved = (
                target.lstrip("/")
                if target.startswith("/")
                else posixpath.normpath(posixpath.join(folder, target))
            )
            found[rel.get("Id") or ""] = (rel.get("Type") or "", resolved)
        return found

    def main_part(self) -> str:
        for rel_type, target in self.rels("").values():
            if rel_type.endswith("/officeDocument") and self.read_exists(target):
                return target
        types = self.xml("[Content_Types].xml")
        if types is not None:
            for override in types.iter(f"{{{_CONTENT_TYPES}}}Override"):
                content_type = override.get("ContentType") or ""
                name = (override.get("PartName") or "").lstrip("/")
                if content_type.endswith(_MAIN_CONTENT_TYPES) and self.read_exists(name):
                    self.warnings.append("document part found by content type, not relationship")
                    return name
        if self.read_exists("word/document.xml"):
            return "word/document.xml"
        if self.read_exists("xl/workbook.xml"):
            raise ExtractionFailed("unsupported_type", "Excel workbook: not a PDF or DOCX")
        if self.read_exists("ppt/presentation.xml"):
            raise ExtractionFailed("unsupported_type", "PowerPoint presentation: not a PDF or DOCX")
        if self.read_exists("content.xml") and self.read_exists("mimetype"):
            raise ExtractionFailed(
                "unsupported_type",
                "OpenDocument file: not a PDF or DOCX",
                hint="save it as .docx or .pdf and upload it again",
            )
        raise ExtractionFailed("unsupported_type", "a ZIP archive, not a PDF or DOCX")

    def read_exists(self, name: str) -> bool:
        return name.lstrip("/").lower() in self._names


class _Walker:
    """Walks WordprocessingML in document order and collects blocks."""

    def __init__(
        self, package: _Package, main: str, *, w: str, pictures: PictureReader | None = None
    ) -> None:
        self.package = package
        self.main = main
        self.w = w
        self.blocks: list[Block] = []
        self.pictures = False
        self.reader = pictures
        self._pending: list[str] = []  # relationship ids of pictures met since the last block
        self.heading: str | None = None
        self.note_headings: dict[tuple[str, str], str | None] = {}
        self._seen: set[tuple[str, str]] = set()
        self.rels = package.rels(main)
        self.styles = self._styles()

    # ------------------------------------------------------------------ document structure

    def read(self, document: etree._Element) -> None:
        body = document.find(self._w("body"))
        if body is not None:
            self._blocks(body, "paragraph", self.blocks)
            self._headers_footers(body)
        self._notes("footnotes", "footnote")
        self._notes("endnotes", "endnote")
        self._comments()

    def _blocks(self, container: etree._Element, kind: BlockKind, out: list[Block]) -> None:
        for child in container:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            if qname.namespace == _MC and qname.localname == "AlternateContent":
                choice = _first_choice(child)
                if choice is not None:
                    self._blocks(choice, kind, out)
            elif qname.namespace != self.w:
                continue
            elif qname.localname == "p":
                self._paragraph(child, kind, out)
            elif qname.localname == "tbl":
                self._table(child, kind, out)
            elif qname.localname in ("sdt", "customXml", "ins", "moveTo", "sdtContent"):
                content = child.find(self._w("sdtContent")) if qname.localname == "sdt" else child
                if content is not None:
                    self._blocks(content, kind, out)

    def _paragraph(self, p: etree._Element, kind: BlockKind, out: list[Block]) -> None:
        parts: list[str] = []
        boxes: list[etree._Element] = []
        mark = len(self._pending)
        self._inline(p, parts, boxes)
        text = clean_text("".join(parts))
        if text:
            if kind == "paragraph" and self._is_heading(p):
                self.heading = " ".join(text.split())
            out.append(Block(text=text, page=None, heading=self.heading, kind=kind))
        self._read_pictures(mark, kind, out)
        for box in boxes:
            self._blocks(box, "textbox" if kind == "paragraph" else kind, out)

    def _inline(self, element: etree._Element, out: list[str], boxes: list[etree._Element]) -> None:
        for child in element:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            name, ns = qname.localname, qname.namespace
            if ns == self.w:
                if name == "t":
                    out.append(child.text or "")
                elif name == "tab":
                    out.append("\t")
                elif name in ("br", "cr"):
                    out.append("\n")
                elif name == "noBreakHyphen":
                    out.append("-")
                elif name == "txbxContent":
                    boxes.append(child)
                elif name in ("footnoteReference", "endnoteReference", "commentReference"):
                    note = name.removesuffix("Reference")
                    self.note_headings.setdefault((note, self._attr(child, "id")), self.heading)
                elif name in ("drawing", "pict", "object"):
                    self.pictures = True
                    self._inline(child, out, boxes)
                elif name in (
                    "delText",
                    "instrText",
                    "delInstrText",
                    "del",
                    "moveFrom",
                    "pPr",
                    "rPr",
                ):
                    continue  # deleted text, field codes and formatting are not content
                else:
                    self._inline(child, out, boxes)
            elif ns == _MC and name == "AlternateContent":
                # The fallback repeats the choice (e.g. VML for a DrawingML text box): read one.
                choice = _first_choice(child)
                if choice is not None:
                    self._inline(choice, out, boxes)
            elif ns in _M and name == "t":
                out.append(child.text or "")
            else:
                if name in ("imagedata", "pic", "blip"):
                    self.pictures = True
                    rid = self._rid(child, "embed" if name == "blip" else "id")
                    if rid:
                        self._pending.append(rid)
                self._inline(child, out, boxes)

    def _read_pictures(self, mark: int, kind: BlockKind, out: list[Block]) -> None:
        """OCR of the pictures met since ``mark``, as blocks after the text that holds them (body
        only: a logo in a header or a note is not worth the time)."""
        rids, self._pending[mark:] = self._pending[mark:], []
        if self.reader is None or kind not in ("paragraph", "table", "textbox"):
            return
        for rid in rids:
            rel = self.rels.get(rid)
            if rel is None or not rel[0].endswith("/image"):
                continue
            data = self.package.read(rel[1])
            if data is None:
                continue
            text = clean_text(self.reader.read(data, rel[1]))
            if text:
                out.append(
                    Block(text=text, page=None, heading=self.heading, kind="picture", ocr=True)
                )

    def _table(self, table: etree._Element, kind: BlockKind, out: list[Block]) -> None:
        rows: list[str] = []
        boxes: list[etree._Element] = []
        mark = len(self._pending)
        for tr in self._children(table, "tr"):
            cells = []
            for tc in self._children(tr, "tc"):
                merge = tc.find(f"{self._w('tcPr')}/{self._w('vMerge')}")
                if merge is not None and self._attr(merge, "val") in ("", "continue"):
                    cells.append("")  # the merged cell's text is in the row where it starts
                    continue
                cells.append(self._cell_text(tc, boxes))
            if any(cells):
                rows.append(" | ".join(cells))
        if rows:
            out.append(
                Block(
                    text="\n".join(rows),
                    page=None,
                    heading=self.heading,
                    kind="table" if kind == "paragraph" else kind,
                )
            )
        self._read_pictures(mark, kind, out)
        for box in boxes:
            self._blocks(box, "textbox" if kind == "paragraph" else kind, out)

    def _cell_text(self, cell: etree._Element, boxes: list[etree._Element]) -> str:
        pieces: list[str] = []
        for child in self._walk_content(cell):
            if etree.QName(child).localname == "p":
                parts: list[str] = []
                self._inline(child, parts, boxes)
                pieces.append(" ".join("".join(parts).split()))
            else:  # a nested table, flattened into the cell
                nested: list[Block] = []
                self._table(child, "paragraph", nested)
                pieces.extend(b.text.replace("\n", "; ") for b in nested)
        return " ".join(p for p in pieces if p)

    def _walk_content(self, container: etree._Element) -> Iterator[etree._Element]:
        """Paragraphs and tables under a cell, looking through content controls."""
        for child in container:
            if not isinstance(child.tag, str) or etree.QName(child).namespace != self.w:
                continue
            name = etree.QName(child).localname
            if name in ("p", "tbl"):
                yield child
            elif name in ("sdt", "customXml", "sdtContent"):
                yield from self._walk_content(child)

    def _children(self, element: etree._Element, name: str) -> Iterator[etree._Element]:
        for child in element:
            if not isinstance(child.tag, str) or etree.QName(child).namespace != self.w:
                continue
            local = etree.QName(child).localname
            if local == name:
                yield child
            elif local in ("sdt", "customXml", "sdtContent"):
                yield from self._children(child, name)

    # ---------------------------------------------------------------- headers, notes, comments

    def _headers_footers(self, body: etree._Element) -> None:
        for sect in body.iter(self._w("sectPr")):
            for ref in sect:
                if not isinstance(ref.tag, str):
                    continue
                local = etree.QName(ref).localname
                if local not in ("headerReference", "footerReference"):
                    continue
                rel = self.rels.get(self._rid(ref))
                if rel is None:
                    continue
                kind: BlockKind = "header" if local == "headerReference" else "footer"
                self._part_as_block(rel[1], kind, heading=None)

    def _notes(self, rel_suffix: str, kind: BlockKind) -> None:
        root = self._related(rel_suffix)
        if root is None:
            return
        for note in root:
            if not isinstance(note.tag, str) or etree.QName(note).localname != kind:
                continue
            if self._attr(note, "type") not in ("", "normal"):
                continue  # separators
            heading = self.note_headings.get((kind, self._attr(note, "id")))
            self._element_as_block(note, kind, heading)

    def _comments(self) -> None:
        root = self._related("comments")
        if root is None:
            return
        for comment in root:
            if isinstance(comment.tag, str) and etree.QName(comment).localname == "comment":
                heading = self.note_headings.get(("comment", self._attr(comment, "id")))
                self._element_as_block(comment, "comment", heading)

    def _related(self, rel_suffix: str) -> etree._Element | None:
        for rel_type, target in self.rels.values():
            if rel_type.endswith(f"/{rel_suffix}"):
                return self.package.xml(target)
        return None

    def _part_as_block(self, part: str, kind: BlockKind, heading: str | None) -> None:
        if (kind, part) in self._seen:
            return
        self._seen.add((kind, part))
        root = self.package.xml(part)
        if root is not None:
            self._element_as_block(root, kind, heading)

    def _element_as_block(
        self, element: etree._Element, kind: BlockKind, heading: str | None
    ) -> None:
        """All text under ``element`` as one block of ``kind``, once per distinct text."""
        saved, self.heading = self.heading, heading
        collected: list[Block] = []
        self._blocks(element, kind, collected)
        self.heading = saved
        text = "\n".join(b.text for b in collected)
        if text and ("text", kind + text) not in self._seen:
            self._seen.add(("text", kind + text))
            self.blocks.append(Block(text=text, page=None, heading=heading, kind=kind))

    # ---------------------------------------------------------------------------- styles

    def _styles(self) -> dict[str, bool]:
        """Style id -> whether paragraphs in that style are headings."""
        root = self._related("styles")
        if root is None:
            return {}
        names: dict[str, str] = {}
        levels: dict[str, bool] = {}
        based: dict[str, str] = {}
        for style in root.iter(self._w("style")):
            sid = self._attr(style, "styleId")
            name = style.find(self._w("name"))
            names[sid] = self._attr(name, "val") if name is not None else ""
            level = style.find(f"{self._w('pPr')}/{self._w('outlineLvl')}")
            if level is not None:
                levels[sid] = self._attr(level, "val") in {str(n) for n in range(9)}
            parent = style.find(self._w("basedOn"))
            if parent is not None:
                based[sid] = self._attr(parent, "val")
        result: dict[str, bool] = {}
        for sid in names:
            current, hops = sid, 0
            heading = bool(_HEADING_NAME.match(names[sid]))
            while not heading and current and hops < 20:
                if current in levels:
                    heading = levels[current]
                    break
                current, hops = based.get(current, ""), hops + 1
            result[sid] = heading
        return result

    def _is_heading(self, p: etree._Element) -> bool:
        props = p.find(self._w("pPr"))
        if props is None:
            return False
        level = props.find(self._w("outlineLvl"))
        if level is not None:
            return self._attr(level, "val") in {str(n) for n in range(9)}
        style = props.find(self._w("pStyle"))
        if style is None:
            return False
        sid = self._attr(style, "val")
        if sid in self.styles:
            return self.styles[sid]
        return bool(_HEADING_NAME.match(sid.replace("Heading", "heading ")))  # no styles part

    # ---------------------------------------------------------------------------- helpers

    def _w(self, local: str) -> str:
        return f"{{{self.w}}}{local}"

    def _attr(self, element: etree._Element, local: str) -> str:
        return element.get(self._w(local)) or ""

    def _rid(self, element: etree._Element, local: str = "id") -> str:
        for ns in _R:
            value = element.get(f"{{{ns}}}{local}")
            if value:
                return value
        return ""


def _first_choice(alternate: etree._Element) -> etree._Element | None:
    for child in alternate:
        if isinstance(child.tag, str) and etree.QName(child).localname in ("Choice", "Fallback"):
            return child
    return None
