"""What kind of document a file is, decided from its bytes, never its name: the one rule the
gateway's upload check, ``parley ingest`` and the ingest worker's dispatcher share. Pure, no I/O.

- ``%PDF-`` in the first KiB: PDF (readers accept the header anywhere there).
- A ZIP package: DOCX, PPTX or XLSX by its main part (``word/``, ``ppt/``, ``xl/``, or the
  content type of a renamed one); an OLE container holding ``EncryptedPackage`` is an encrypted
  Office file (reported as ``encrypted`` by the worker, which tells the user more than a refusal).
- Otherwise text: bytes that decode (BOM, UTF-8, or a detected legacy encoding) without NULs or
  control characters. Text is HTML when it opens like a page (``<!doctype html``, ``<html``,
  ``<head``, ``<body``), Markdown when it has Markdown structure (ATX/setext headings, fences,
  links, tables, lists with a heading), plain text otherwise.

Anything else is :class:`UnsupportedType`, whose message says what the file looks like.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from typing import IO, Final, Literal, get_args

from parley.errors import UserError

FileKind = Literal["pdf", "docx", "pptx", "xlsx", "html", "markdown", "text"]
KINDS: Final[tuple[FileKind, ...]] = get_args(FileKind)

#: The extensions a kind's file may carry, the usual one first (the gateway renames a file whose
#: extension does not match what its bytes are).
EXTENSIONS: Final[dict[FileKind, tuple[str, ...]]] = {
    "pdf": (".pdf",),
    "docx": (".docx", ".docm", ".dotx"),
    "pptx": (".pptx", ".pptm", ".ppsx"),
    "xlsx": (".xlsx", ".xlsm"),
    "html": (".html", ".htm", ".xhtml"),
    "markdown": (".md", ".markdown", ".mdown", ".mkd"),
    "text": (".txt", ".text", ".csv", ".tsv", ".log", ".rst", ".ini", ".json", ".xml", ".yaml"),
}
SUPPORTED: Final = "PDF, Word (.docx), PowerPoint (.pptx), Excel (.xlsx), HTML, Markdown or text"

_OLE: Final = bytes.fromhex("d0cf11e0a1b11ae1")
_ZIP: Final = b"PK\x03\x04"
_SNIFF_BYTES: Final = 64 * 1024
_LOOKS_LIKE: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"{\\rtf", "an RTF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"\x7fELF", "a program (ELF)"),
    (b"MZ", "a Windows program"),
)
_MAIN_PARTS: Final[tuple[tuple[str, FileKind], ...]] = (
    ("word/document.xml", "docx"),
    ("ppt/presentation.xml", "pptx"),
    ("xl/workbook.xml", "xlsx"),
)
_LOCAL_NAMES: Final[tuple[tuple[bytes, FileKind], ...]] = (
    (b"word/document.xml", "docx"),
    (b"ppt/presentation.xml", "pptx"),
    (b"xl/workbook.xml", "xlsx"),
    (b"word/", "docx"),
    (b"ppt/", "pptx"),
    (b"xl/", "xlsx"),
)
_MAIN_TYPES: Final[tuple[tuple[bytes, FileKind], ...]] = (
    (b"wordprocessingml.document.main+xml", "docx"),
    (b"wordprocessingml.template.main+xml", "docx"),
    (b"ms-word.document.macroEnabled.main+xml", "docx"),
    (b"presentationml.presentation.main+xml", "pptx"),
    (b"presentationml.slideshow.main+xml", "pptx"),
    (b"ms-powerpoint.presentation.macroEnabled.main+xml", "pptx"),
    (b"spreadsheetml.sheet.main+xml", "xlsx"),
    (b"ms-excel.sheet.macroEnabled.main+xml", "xlsx"),
)
_BOMS: Final[tuple[tuple[bytes, str], ...]] = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE, whose BOM it starts with
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# C0 controls other than tab, newlines, form feed and escape: text files do not hold them.
_USUAL_ENCODINGS: Final = ("cp1252", "iso8859_15", "latin_1")
_CONTROL: Final = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_HTML_START: Final = re.compile(
    r"\A\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b",
    re.IGNORECASE | re.DOTALL,
)
_MD_HEADING: Final = re.compile(r"^#{1,6}[ \t]+\S", re.MULTILINE)
_MD_SETEXT: Final = re.compile(r"^[^\n]*\S[^\n]*\n(?:=+|-+)[ \t]*$", re.MULTILINE)
_MD_FENCE: Final = re.compile(r"^(?:```|~~~)", re.MULTILINE)
_MD_LINK: Final = re.compile(r"!?\[[^\]\n]+\]\([^)\s]+\)")
_MD_TABLE: Final = re.compile(r"^\|?[ \t]*:?-{3,}:?[ \t]*\|", re.MULTILINE)
_MD_EMPHASIS: Final = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__|`[^`\n]+`")


class UnsupportedType(UserError):
    """The bytes are none of :data:`KINDS`; the message says what they look like."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, reason="unsupported_type", hint=hint)


def detect(data: bytes | IO[bytes]) -> FileKind:
    """The kind of document ``data`` is (see the module docstring), or :class:`UnsupportedType`.
    Empty data is plain text here: callers refuse empty files before asking. A file is read from
    its start, only as far as needed (a ZIP's directory is read where it lies)."""
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    file.seek(0)
    head = file.read(_SNIFF_BYTES + 1)
    file.seek(0)
    partial, head = len(head) > _SNIFF_BYTES, head[:_SNIFF_BYTES]
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(_ZIP):
        kind = office_kind(file)
        if kind is None and _is_opendocument(file):
            raise UnsupportedType(
                "an OpenDocument file (LibreOffice), not a Word, PowerPoint or Excel file",
                hint="save it as .docx, .pptx, .xlsx or .pdf and upload it again",
            )
        if kind is None:
            raise UnsupportedType(
                "a ZIP archive that is not a Word, PowerPoint or Excel file",
                hint=f"upload {SUPPORTED} files; unpack archives first",
            )
        return kind
    if head.startswith(_OLE):
        if _contains(file, "EncryptedPackage".encode("utf-16-le")):
            return "docx"  # the worker reports it as encrypted, naming the real problem
        raise UnsupportedType(
            "a legacy Office file (Word, PowerPoint or Excel 97-2003)",
            hint="save it as .docx, .pptx, .xlsx or .pdf and upload it again",
        )
    for magic, what in _LOOKS_LIKE:
        if head.startswith(magic):
            raise UnsupportedType(
                f"not a supported document: it looks like {what}", hint=f"upload {SUPPORTED} files"
            )
    text = sniff_text(head, partial=partial)
    if text is None:
        raise UnsupportedType(
            "not a supported document: it looks like some other binary file",
            hint=f"upload {SUPPORTED} files",
        )
    return text_kind(text)


def office_kind(file: IO[bytes]) -> FileKind | None:
    """DOCX, PPTX or XLSX by the package's main part, or ``None`` for another ZIP."""
    try:
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            names = {name.lower() for name in archive.namelist()}
            for part, kind in _MAIN_PARTS:
                if part in names:
                    return kind
            if "[content_types].xml" in names:
                # The main part may have another name: it is found through its content type.
                info = next(
                    i for i in archive.infolist() if i.filename.lower() == "[content_types].xml"
                )
                with archive.open(info) as types:
                    head = types.read(1024 * 1024)
                for marker, kind in _MAIN_TYPES:
                    if marker in head:
                        return kind
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, NotImplementedError, EOFError):
        # A damaged package (cut off, no central directory) still names its parts in the local
        # headers: it is what they say, and its extractor reports it as damaged.
        file.seek(0)
        start = file.read(4 * 1024 * 1024)
        for prefix, kind in _LOCAL_NAMES:
            if prefix in start:
                return kind
        return None
    finally:
        file.seek(0)
    return None


def _is_opendocument(file: IO[bytes]) -> bool:
    try:
        file.seek(0)
        with zipfile.ZipFile(file) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError):
        return False
    finally:
        file.seek(0)
    return "mimetype" in names and "content.xml" in names


def _contains(file: IO[bytes], needle: bytes, block: int = 1024 * 1024) -> bool:
    """Whether ``needle`` occurs in the file, read a block at a time (blocks overlap by the
    needle's length, so a match across two blocks is found)."""
    file.seek(0)
    tail = b""
    try:
        while chunk := file.read(block):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
        return False
    finally:
        file.seek(0)


def sniff_text(data: bytes, *, partial: bool = False) -> str | None:
    """``data`` decoded when it is text (see :func:`decode`), else ``None``. ``partial``: the
    bytes are a prefix, so a multi-byte character cut at the end is not an error."""
    decoded = decode(data, partial=partial)
    if decoded is None:
        return None
    text, _ = decoded
    if _CONTROL.search(text[:_SNIFF_BYTES]):
        return None
    return text


def decode(data: bytes, *, partial: bool = False) -> tuple[str, str] | None:
    """(text, encoding) of bytes that are text: a BOM's encoding, else UTF-8, else the legacy
    encoding charset-normalizer finds most likely; ``None`` for binary data."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _decode(data, encoding, partial), encoding
            except UnicodeDecodeError:
                return None
    if b"\x00" in data[:_SNIFF_BYTES]:
        return None  # UTF-16 without a BOM is not worth guessing; binary files hold NULs
    try:
        return _decode(data, "utf-8", partial), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data[: 1024 * 1024] if partial else data)
    best = matches.best()
    if best is None or best.encoding is None:
        return None
    encoding = best.encoding
    # Short Western text fits several single-byte code pages equally well; the one most files
    # are written in wins a tie (cp1250 would turn "crème" into "crčme").
    tied = {m.encoding for m in matches if m.chaos <= best.chaos and m.coherence >= best.coherence}
    for usual in _USUAL_ENCODINGS:
        if usual in tied:
            encoding = usual
            break
    try:
        return data.decode(encoding, errors="replace" if partial else "strict"), encoding
    except (UnicodeDecodeError, LookupError):
        return None


def _decode(data: bytes, encoding: str, partial: bool) -> str:
    decoder = codecs.getincrementaldecoder(encoding)()
    return decoder.decode(data, final=not partial)


def text_kind(text: str) -> Literal["html", "markdown", "text"]:
    """HTML, Markdown or plain text, by what the text holds (see the module docstring)."""
    if _HTML_START.match(text[:4096]):
        return "html"
    sample = text[:_SNIFF_BYTES]
    headings = len(_MD_HEADING.findall(sample)) + len(_MD_SETEXT.findall(sample))
    signals = (
        bool(headings)
        + bool(_MD_FENCE.search(sample))
        + bool(_MD_LINK.search(sample))
        + bool(_MD_TABLE.search(sample))
        + bool(_MD_EMPHASIS.search(sample))
    )
    if _MD_HEADING.search(sample) or signals >= 2:
        return "markdown"
    return "text"

