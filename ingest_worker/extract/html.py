"""HTML: the page's main content, not its navigation, with trafilatura.

trafilatura finds the main content (article, main text) and drops navigation, headers, footers,
sidebars, cookie banners and comments; it returns the content as a small XML tree (``head``,
``p``, ``list``/``item``, ``table``/``row``/``cell``, ``quote``, ``code``) which is walked here:
every ``head`` starts a section, tables become one line per row with `` | `` between cells. A
page where trafilatura finds no main content (a bare list of paragraphs, say) falls back to all
of its visible text. The encoding comes from the bytes (BOM, ``<meta charset>``, detection).
"""

from __future__ import annotations

from html import escape

from lxml import etree

from ingest_worker.extract.text import decode_document
from ingest_worker.extract.types import Block, BlockKind, Extraction, ExtractionFailed, clean_text

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=True)


def extract_html(data: bytes) -> Extraction:
    import trafilatura

    page, warnings = decode_document(data, "web page")
    tree = trafilatura.extract(
        _main_part(page),
        output_format="xml",
        include_tables=True,
        include_comments=False,
        include_links=False,
        include_images=False,
        favor_recall=True,
        with_metadata=True,
        deduplicate=False,
    )
    blocks: list[Block] = []
    title: str | None = None
    if tree:
        root = etree.fromstring(tree.encode(), _PARSER)
        if root is not None:
            title = (root.get("title") or "").strip() or None
            _walk(root, blocks, title)
    if not blocks:
        fallback = trafilatura.html2txt(page, clean=True)
        text = clean_text(fallback or "")
        if text:
            warnings.append("no main content found: all of the page's text was read")
            blocks = [
                Block(text=p, page=None, heading=title, kind="paragraph")
                for p in (clean_text(part) for part in text.split("\n"))
                if p
            ]
    if not blocks:
        raise ExtractionFailed("empty", "the web page shows no text")
    return Extraction(
        kind="html",
        pages=None,
        blocks=tuple(blocks),
        extractor="trafilatura",
        warnings=tuple(warnings),
    )


# Elements that are navigation or page furniture by their very tag or ARIA role.
_FURNITURE = ("nav", "header", "footer", "aside", "script", "style", "noscript", "form", "template")
_ROLES = ("navigation", "banner", "contentinfo", "search", "complementary", "menu", "menubar")


def _main_part(page: str) -> str:
    """The page with its navigation, header, footer and sidebars removed, and narrowed to its one
    ``<main>`` (or else its one ``<article>``) when it has one: the structure a page states itself
    beats trafilatura's guess, which on a short page can keep the menu."""
    from lxml import html as lxml_html

    try:
        document = lxml_html.document_fromstring(page)
    except (etree.ParserError, ValueError):
        return page
    title = document.findtext(".//title") or ""
    furniture = [
        element
        for element in document.iter(*_FURNITURE)
        # an article's own header (its title, byline) is content
        if not (element.tag in ("header", "footer") and _inside_main(element))
    ]
    furniture += [
        element for element in document.iter() if str(element.get("role") or "").lower() in _ROLES
    ]
    for element in furniture:
        if isinstance(element, lxml_html.HtmlElement) and element.getparent() is not None:
            element.drop_tree()  # keeps the text after the element (its tail)
    for tag in ("main", "article"):
        found = document.findall(f".//{tag}")
        if len(found) == 1:
            inner = lxml_html.tostring(found[0], encoding="unicode")
            return f"<html><head><title>{escape(title)}</title></head><body>{inner}</body></html>"
    return str(lxml_html.tostring(document, encoding="unicode"))


def _inside_main(element: etree._Element) -> bool:
    """Whether ``element`` is inside the page's ``<main>`` or an ``<article>``."""
    parent = element.getparent()
    while parent is not None:
        if parent.tag in ("main", "article"):
            return True
        parent = parent.getparent()
    return False


def _walk(root: etree._Element, out: list[Block], title: str | None) -> None:
    heading = title
    for element in root.iter("head", "p", "item", "table", "quote", "code"):
        if _inside(element, ("table", "item", "quote")) and element.tag != "table":
            continue  # read whole with its table, list item or quote
        kind: BlockKind = "paragraph"
        if element.tag == "table":
            text = _table(element)
            kind = "table"
        else:
            text = clean_text(" ".join("".join(str(t) for t in element.itertext()).split(" ")))
        if not text:
            continue
        if element.tag == "head":
            heading = " ".join(text.split())
        out.append(Block(text=text, page=None, heading=heading, kind=kind))


def _inside(element: etree._Element, tags: tuple[str, ...]) -> bool:
    parent = element.getparent()
    while parent is not None:
        if parent.tag in tags:
            return True
        parent = parent.getparent()
    return False


def _table(table: etree._Element) -> str:
    rows = []
    for row in table.iter("row"):
        cells = [
            " ".join("".join(str(t) for t in cell.itertext()).split()) for cell in row.iter("cell")
        ]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
