"""The portal end to end in headless Chromium, on the whole stack (see conftest.py): a user signs
in, uploads files (picker and drag-and-drop), watches them become ready or fail with a reason,
asks, sees tokens stream and a citation open the cited chunk, stops an answer, reloads
mid-answer and loses the connection mid-answer and sees the stream resume, retries and deletes.
Every test ends with no console errors on the page.

The tests run in file order on one page (like one user's session); a later one skips with the
reason when an earlier step it builds on did not happen.

``PARLEY_SCREENSHOTS=docs/screenshots pytest tests/portal`` also saves the main screens.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from chat_gateway.feedback import FeedbackStore
from parley.ids import DocumentId
from parley.status import Stage
from tests.conftest import SHARED
from tests.fixtures import documents as fx
from tests.portal.conftest import PIECES, TENANT, TOKEN, Stack

pytestmark = pytest.mark.slow

FULL_ANSWER = "".join(PIECES)
WAIT = 60_000  # ms: generous, for a loaded 2-core machine; nothing here is a timing claim


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


@dataclass(frozen=True)
class Corpus:
    """Two good files, one that fails in ingestion, and the question whose best source is in
    ``expected`` (a PDF, so the citation has a page)."""

    good: tuple[Upload, Upload]
    broken: Upload
    broken_reason: str
    question: str
    expected: str
    origin: str


def corpus() -> Corpus:
    """Two real files of ../shared/corpus and a real image-only PDF; without ../shared, generated
    files of the same kinds (that part of the test then proves less about real files)."""
    pdfs, docx = SHARED / "corpus" / "pdf", SHARED / "corpus" / "docx"
    if (pdfs / "f1040nr.pdf").exists() and (docx / "240-DOP-1013A Lay Down Tubulars.docx").exists():
        return Corpus(
            good=(Upload("f1040nr.pdf", (pdfs / "f1040nr.pdf").read_bytes()),
                  Upload("240-DOP-1013A Lay Down Tubulars.docx",
                         (docx / "240-DOP-1013A Lay Down Tubulars.docx").read_bytes())),
            # Pictures of shapes: OCR reads them (c02-22.pdf, a scanned book page, is read now).
            broken=Upload("imagemagick-images.pdf",
                          (pdfs / "imagemagick-images.pdf").read_bytes()),
            broken_reason="scanned PDF: OCR found no readable text",
            question="Who must file Form 1040-NR, the U.S. nonresident alien income tax return?",
            expected="f1040nr.pdf", origin="../shared/corpus",
        )
    return Corpus(
        good=(Upload("zanzibar-plan.pdf", fx.text_pdf([
                  fx.lorem(120, seed=1),
                  "The Zanzibar harbour project has a budget of 42 million euros, approved in "
                  "March by the port authority. " + fx.lorem(60, seed=2)])),
              Upload("pipe-handling.docx", fx.docx([
                  "Lay down tubulars with the pipe handler; never stand under a suspended load.",
                  fx.lorem(80, seed=3)]))),
        broken=Upload("scan.pdf", fx.scanned_pdf(2)),
        broken_reason="scanned PDF: OCR found no readable text",
        question="What is the budget of the Zanzibar harbour project?",
        expected="zanzibar-plan.pdf", origin="generated (../shared is absent)",
    )


@dataclass
class Session:
    """One user's page and what it saw: console errors and the websocket frames received."""

    page: Any
    errors: list[str] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    corpus: Corpus = field(default_factory=corpus)
    steps: set[str] = field(default_factory=set)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def frames_of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def needs(self, step: str) -> None:
        if step not in self.steps:
            pytest.skip(f"needs the step {step!r} of an earlier test, which did not pass")

    async def shot(self, name: str) -> None:
        target = os.environ.get("PARLEY_SCREENSHOTS")
        if target:  # playwright creates the folder
            await self.page.screenshot(path=str(Path(target) / f"{name}.png"))


@pytest.fixture(scope="module")
async def session(stack: Stack, chromium: Any) -> AsyncIterator[Session]:
    context = await chromium.new_context(viewport={"width": 1200, "height": 760},
                                         device_scale_factor=1)
    page = await context.new_page()
    page.set_default_timeout(WAIT)
    result = Session(page)

    def on_console(message: Any) -> None:
        if message.type == "error":
            result.errors.append(message.text)

    def on_socket(ws: Any) -> None:
        def received(payload: str | bytes) -> None:
            if isinstance(payload, str):
                result.frames.append(json.loads(payload))

        ws.on("framereceived", received)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: result.errors.append(f"uncaught: {exc}"))
    page.on("websocket", on_socket)
    await page.goto(stack.url + "/")
    yield result
    await context.close()


@pytest.fixture(autouse=True)
def no_console_errors(session: Session, stack: Stack) -> Any:
    session.errors.clear()
    session.allowed.clear()
    yield
    unexpected = [e for e in session.errors if not any(p.search(e) for p in session.allowed)]
    assert unexpected == [], f"console errors: {unexpected}\n{stack.worker_logs()}"


def expect(locator: Any) -> Any:
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)


def answer_of(page: Any) -> Any:
    return page.locator("li.turn").last


async def text_of(turn: Any) -> str:
    return str(await turn.locator(".answer .text").text_content())


# --- the steps ------------------------------------------------------------------------------


async def test_sign_in_refuses_a_bad_token_then_shows_where_to_start(session: Session) -> None:
    page = session.page
    await expect(page.locator("#token")).to_be_focused()
    await session.shot("signin")
    await page.fill("#token", "not-a-token")
    await page.keyboard.press("Enter")
    await expect(page.locator("#signin-error")).to_contain_text("Sign-in failed: unknown token")
    await expect(page.locator("#view-signin")).to_be_visible()
    await page.fill("#token", TOKEN)
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#view-chat")).to_be_visible()
    await expect(page.locator("#conn")).to_have_text("Connected")
    await expect(page.locator("#question")).to_be_focused()
    await expect(page.locator("#chat-empty")).to_contain_text("No documents yet.")
    assert await page.evaluate("localStorage.getItem('parley.token')") == TOKEN
    session.steps.add("signed-in")


async def test_upload_many_files_and_watch_them_end_ready_or_failed_with_a_reason(
    session: Session, stack: Stack, tmp_path: Path
) -> None:
    session.needs("signed-in")
    page, c = session.page, session.corpus
    await page.get_by_role("button", name="Upload documents").click()
    await expect(page.locator("#view-docs")).to_be_visible()
    await expect(page.locator("#docs-empty")).to_be_visible()
    # The picker: one good file, the broken one and a PNG named like a PDF.
    paths = []
    for upload in (c.good[0], c.broken, Upload("photo.pdf", b"\x89PNG\r\n\x1a\n" + bytes(64))):
        path = tmp_path / upload.name
        path.write_bytes(upload.data)
        paths.append(str(path))
    async with page.expect_file_chooser() as chooser:
        await page.click("#pick")
    await (await chooser.value).set_files(paths)
    # Drag-and-drop: the other good file.
    await drop(page, [c.good[1]])
    rejected = page.locator('#uploads li[data-name="photo.pdf"]')
    await expect(rejected).to_have_attribute("data-state", "rejected")
    await expect(rejected).to_contain_text("not a supported document")
    rows = {u.name: page.locator("li.document", has_text=u.name) for u in (*c.good, c.broken)}
    for upload in c.good:
        await expect(rows[upload.name]).to_have_attribute("data-stage", "ready", timeout=90_000)
    # OCR looks at the broken file's pages before it fails: seconds, not a moment.
    await expect(rows[c.broken.name]).to_have_attribute("data-stage", "failed", timeout=90_000)
    await expect(rows[c.broken.name].locator(".reason")).to_contain_text(c.broken_reason)
    await expect(page.locator("li.document")).to_have_count(3)  # the PNG never reached the server
    await session.shot("documents")
    # What the rows say is what the status records say, and it arrived live.
    records = {d.filename: d for d in await stack.status.documents(TENANT)}
    for upload in c.good:
        record = records[upload.name]
        await expect(rows[upload.name].locator(".chunks")).to_have_text(
            f"{record.chunks} chunk{'s' if record.chunks != 1 else ''}")
        stages = {f["stage"] for f in session.frames_of("document")
                  if f["document_id"] == record.document_id}
        assert {"queued", "ready"} <= stages and stages & {"extracting", "embedding"}, stages
    assert records[c.good[0].name].pages_total is not None
    # The failure happened in front of the user: nothing needs their attention.
    await expect(page.locator("#docs-badge")).to_have_text("")
    session.steps.add("documents")


async def test_ask_streams_tokens_and_a_citation_opens_the_cited_chunk(
    session: Session, stack: Stack
) -> None:
    session.needs("documents")
    page, c = session.page, session.corpus
    await page.click("#tab-chat")
    await expect(page.locator("#chat-empty")).to_contain_text("Ask a question.")
    stack.model.first_delay = 4.0  # a model still loading: the page says so
    try:
        await page.fill("#question", c.question)
        await page.keyboard.press("Enter")
        await expect(page.locator("#chat-status")).to_contain_text("warming up")
        await session.shot("warming")
        turn = answer_of(page)
        # Tokens stream: a partial answer is on screen while the turn is still streaming.
        await expect(turn.locator(".answer .text")).not_to_have_text("")
        partial = await text_of(turn)
        assert await turn.get_attribute("data-state") == "streaming"
        assert 0 < len(partial) < len(FULL_ANSWER) and FULL_ANSWER.startswith(partial)
        await expect(page.locator("#stop")).to_be_visible()
        await expect(turn).to_have_attribute("data-state", "done")
    finally:
        stack.model.first_delay = 0.0
    assert await text_of(turn) == FULL_ANSWER
    await expect(page.locator("#stop")).to_be_hidden()
    [sources] = session.frames_of("sources")[-1:]
    shown = turn.locator(".sources li")
    await expect(shown).to_have_count(len(sources["sources"]))
    await expect(turn.locator(".sources li.cited")).to_have_count(2)  # [1] and [2]
    first = sources["sources"][0]
    assert first["document"] == c.expected, sources["sources"]
    await session.shot("chat")
    # The citation [1] opens the chunk the gateway sent as source 1: text, document, page.
    await turn.locator("button.cite", has_text="1").first.click()
    dialog = page.locator("#source-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#source-title")).to_have_text(first["document"])
    await expect(dialog.locator("#source-text")).to_have_text(first["text"])
    if first["page"]:
        await expect(dialog.locator("#source-meta")).to_contain_text(f"page {first['page']}")
    await expect(dialog.get_by_role("button", name="Close")).to_be_focused()
    await session.shot("citation")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    session.steps.add("asked")


async def test_stop_cancels_the_answer(session: Session) -> None:
    session.needs("asked")
    page = session.page
    await page.locator("#question").focus()
    await page.keyboard.type("Tell me more.")
    await page.keyboard.press("Enter")
    turn = answer_of(page)
    await expect(turn.locator(".answer .text")).to_have_text(re.compile(r".{20,}"))
    await page.keyboard.press("Escape")
    await expect(turn).to_have_attribute("data-state", "stopped")
    await expect(turn.locator(".note")).to_have_text("Stopped.")
    stopped = await text_of(turn)
    assert len(stopped) < len(FULL_ANSWER) and FULL_ANSWER.startswith(stopped)
    cancelled = session.frames_of("cancelled")
    assert cancelled and cancelled[-1]["turn_id"] == await turn.get_attribute("data-turn")


async def test_a_reload_mid_answer_resumes_the_stream(session: Session) -> None:
    session.needs("asked")
    page = session.page
    await page.fill("#question", "And what else?")
    await page.keyboard.press("Enter")
    turn = answer_of(page)
    await expect(turn.locator(".answer .text")).to_have_text(re.compile(r".{30,}"))
    before = await text_of(turn)
    turn_id = await turn.get_attribute("data-turn")
    await page.reload()
    turn = answer_of(page)
    await expect(turn).to_have_attribute("data-turn", str(turn_id))
    await expect(turn).to_have_attribute("data-state", "done")
    # No gap and no duplicate: exactly the whole answer (a mismatch with the final event's
    # text would also have logged a console error).
    assert await text_of(turn) == FULL_ANSWER
    assert FULL_ANSWER.startswith(before) and len(before) < len(FULL_ANSWER)
    resumed = [f for f in session.frames_of("turn") if f.get("resumed")]
    assert resumed and resumed[-1]["turn_id"] == turn_id


async def test_a_lost_connection_reconnects_and_the_answer_resumes(
    session: Session, stack: Stack
) -> None:
    session.needs("asked")
    page = session.page
    # Connecting to a server that is down is logged by Chromium itself.
    session.allowed.append(re.compile(r"WebSocket connection to .* failed"))
    await page.fill("#question", "One more question.")
    await page.keyboard.press("Enter")
    turn = answer_of(page)
    await expect(turn.locator(".answer .text")).to_have_text(re.compile(r".{10,}"))
    turn_id = await turn.get_attribute("data-turn")
    await stack.stop_gateway()  # the replica goes away mid-answer
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    await expect(page.locator("#banner")).to_contain_text("Connection lost")
    await session.shot("reconnecting")
    await stack.start_gateway()  # another replica on the same address
    await expect(page.locator("#conn")).to_have_text("Connected")
    await expect(turn).to_have_attribute("data-state", "done")
    assert await text_of(turn) == FULL_ANSWER
    assert any(f.get("resumed") and f["turn_id"] == turn_id for f in session.frames_of("turn"))


async def test_a_figure_not_in_the_cited_sources_is_marked(
    session: Session, stack: Stack
) -> None:
    session.needs("asked")
    page = session.page
    script = stack.model.pieces
    # The worker's checks run on this answer: "[99]" names no source (at most retrieval_k
    # are given), 987,654 is in none.
    stack.model.pieces = ("The", " budget", " was", " 987,654", " euros", " [1][99].")
    try:
        await page.fill("#question", "What was the budget?")
        await page.keyboard.press("Enter")
        turn = answer_of(page)
        await expect(turn).to_have_attribute("data-state", "done")
    finally:
        stack.model.pieces = script
    assert await text_of(turn) == "The budget was 987,654 euros [1]."  # the checked text
    await expect(turn.locator("mark.unsupported")).to_have_text("987,654")
    await expect(turn.locator(".note.warn")).to_contain_text("987,654")
    await session.shot("unsupported-figure")


async def test_retry_only_where_it_can_help_and_the_badge_counts_unseen_failures(
    session: Session, stack: Stack
) -> None:
    session.needs("documents")
    page, c = session.page, session.corpus
    await page.click("#tab-docs")
    broken = page.locator("li.document", has_text=c.broken.name)
    # The scan's failure is about the file itself: trying the same bytes again cannot help.
    await expect(broken).to_have_attribute("data-stage", "failed")
    await expect(broken.get_by_role("button", name=f"Delete {c.broken.name}")).to_be_visible()
    await expect(broken.get_by_role("button", name=f"Retry {c.broken.name}")).to_have_count(0)
    await page.click("#tab-chat")
    # A failure that a retry can fix (the reader timed out), while the user is on the chat.
    pdf = page.locator("li.document", has_text=c.good[0].name)
    ident = str(await pdf.get_attribute("data-id"))
    await stack.status.update(TENANT, DocumentId(ident), stage=Stage.FAILED, reason="timeout",
                              message="reading the file took longer than 120 s")
    await expect(page.locator("#docs-badge")).to_have_text("1 failed")
    await page.click("#tab-docs")
    await expect(page.locator("#docs-badge")).to_have_text("")  # seen
    seen = len(session.frames)
    await pdf.get_by_role("button", name=f"Retry {c.good[0].name}").click()

    def stages() -> list[str]:
        return [f["stage"] for f in session.frames[seen:] if f.get("document_id") == ident]

    # Queued again, then ready: the served version is this content, so nothing is redone.
    await expect(pdf).to_have_attribute("data-stage", "ready")
    assert stages()[0] == "queued" and stages()[-1] == "ready", stages()
    await expect(pdf.get_by_role("button", name=f"Retry {c.good[0].name}")).to_have_count(0)
    await page.reload()  # what was seen stays seen
    await expect(page.locator("li.document")).to_have_count(3)
    await expect(page.locator("#docs-badge")).to_have_text("")
    docx_row = page.locator("li.document", has_text=c.good[1].name)
    delete = docx_row.get_by_role("button", name=f"Delete {c.good[1].name}")
    await delete.click()
    await docx_row.get_by_role("button", name=f"Really delete {c.good[1].name}?").click()
    await expect(docx_row).to_have_count(0)
    await expect(page.locator("li.document")).to_have_count(2)
    names = {d.filename for d in await stack.status.documents(TENANT)}
    assert names == {c.good[0].name, c.broken.name}


async def test_an_answer_takes_a_rating_and_a_comment(session: Session, stack: Stack) -> None:
    session.needs("asked")
    page = session.page
    await page.click("#tab-chat")
    turn = page.locator('li.turn[data-state="done"]').first
    turn_id = str(await turn.get_attribute("data-turn"))
    await turn.get_by_role("button", name="Good answer").click()
    await expect(turn.locator(".feedback-note")).to_have_text("Thanks for the rating.")
    await turn.get_by_role("button", name="Bad answer").click()  # changed their mind
    await expect(turn.get_by_role("button", name="Bad answer")).to_have_attribute(
        "aria-pressed", "true")
    comment = turn.get_by_role("textbox", name="Comment on this answer (optional)")
    await expect(comment).to_be_focused()
    await comment.fill("It cites the right page but misses the deadline.")
    await comment.press("Enter")
    await expect(turn.locator(".feedback-note")).to_have_text("Thanks: your comment was sent.")
    await session.shot("feedback")
    [record] = [r for r in await FeedbackStore(stack.redis, keys=stack.settings.keys).all(TENANT)
                if r.turn_id == turn_id]
    assert (record.rating, record.comment) == (
        "down", "It cites the right page but misses the deadline.")
    assert record.question == session.corpus.question and record.answer == FULL_ANSWER
    assert record.sources[0]["document"] == session.corpus.expected
    assert record.model == stack.model.name
    session.steps.add("rated")


async def test_conversations_follow_the_user_to_another_browser(
    session: Session, stack: Stack, chromium: Any
) -> None:
    session.needs("asked")
    page, c = session.page, session.corpus
    # A second browser (its own storage: another device), signed in as the same user.
    other = await chromium.new_context(viewport={"width": 1200, "height": 760})
    try:
        second = await other.new_page()
        second.set_default_timeout(WAIT)
        await second.goto(stack.url + "/")
        await second.fill("#token", TOKEN)
        await second.keyboard.press("Enter")
        listed = second.locator("#convo-list li")
        await expect(listed).to_have_count(1)
        entry = listed.first
        await expect(entry).to_contain_text(c.question[:40])
        await entry.locator("button.open").click()
        questions = second.locator("#messages li.q")
        await expect(questions.first).to_have_text(c.question)
        done = second.locator('li.turn[data-state="done"]')
        await expect(done.first.locator(".answer .text")).to_have_text(FULL_ANSWER)
        await expect(done.first.locator(".sources li")).not_to_have_count(0)
        if "rated" in session.steps:  # the rating given in the first browser shows here
            await expect(done.first.get_by_role("button", name="Bad answer")).to_have_attribute(
                "aria-pressed", "true")
        # A question asked here joins the same conversation, seen in the first browser.
        await second.fill("#question", "A question from the second browser.")
        await second.keyboard.press("Enter")
        await expect(second.locator("li.turn").last).to_have_attribute("data-state", "done")
        await page.reload()
        await expect(page.locator("#messages li.q").last).to_have_text(
            "A question from the second browser.")
        # Renamed in the second browser: the first shows the new title once it looks again.
        await entry.get_by_role("button", name=re.compile("^Rename")).click()
        title = entry.get_by_role("textbox", name=re.compile("^New title for"))
        await expect(title).to_be_focused()
        await title.fill("Budget questions")
        await title.press("Enter")
        await expect(entry.locator("button.open")).to_have_text("Budget questions")
        await page.reload()
        await expect(page.locator("#convo-list li button.open").first).to_have_text(
            "Budget questions")
        # Deleted in the second browser: gone from the first one's list after a reload.
        await entry.get_by_role("button", name="Delete Budget questions").click()
        await entry.get_by_role("button", name=re.compile("^Really delete Budget questions")
                                ).click()
        await expect(listed).to_have_count(0)
        await page.reload()
        await expect(page.locator("#convo-list li")).to_have_count(0)
        await expect(page.locator("#chat-empty")).to_contain_text("Ask a question.")
    finally:
        await other.close()


async def test_table_rows_of_a_cited_passage_stay_on_one_line(session: Session) -> None:
    session.needs("signed-in")
    page = session.page
    await page.set_viewport_size({"width": 500, "height": 760})
    try:
        rows = await page.evaluate("""async () => {
            const { passageNodes } = await import("/static/js/passage.js");
            const text = "Stock by warehouse:\\n" +
                "Warehouse | City | Pallets held at the end of the quarter | Manager on duty\\n" +
                "Warehouse X | Rotterdam Europoort | 1,250 pallets of dry goods | A. Jansen\\n" +
                "Warehouse Y | Antwerp | 980 | B. Peeters\\nEnd of table.";
            const target = document.querySelector("#source-text");
            target.replaceChildren(...passageNodes(text));
            document.querySelector("#source-dialog").showModal();
            const lineHeight = parseFloat(getComputedStyle(target.querySelector("td")).lineHeight)
                || 20;
            return [...target.querySelectorAll("tr")].map((tr) => ({
                cells: tr.cells.length,
                lines: Math.round(tr.getBoundingClientRect().height / lineHeight),
            }));
        }""")
        assert [r["cells"] for r in rows] == [4, 4, 4]
        assert all(r["lines"] <= 1 for r in rows), rows
        await expect(page.locator("#source-text .passage-text").first).to_have_text(
            "Stock by warehouse:")
        await page.keyboard.press("Escape")
    finally:
        await page.set_viewport_size({"width": 1200, "height": 760})


async def test_phone_width_is_readable(session: Session) -> None:
    session.needs("asked")
    page = session.page
    await page.set_viewport_size({"width": 390, "height": 844})
    try:
        for tab, name in (("#tab-chat", "phone-chat"), ("#tab-docs", "phone-documents")):
            await page.click(tab)
            await page.wait_for_timeout(100)  # layout settles
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name}: {overflow}px wider than the phone"
            await session.shot(name)
        await page.click("#tab-chat")
        box = await page.locator("#question").bounding_box()
        assert box is not None and box["width"] > 200
    finally:
        await page.set_viewport_size({"width": 1200, "height": 760})


async def drop(page: Any, uploads: list[Upload]) -> None:
    """Drop files on the drop zone as a user dragging them from the desktop would."""
    payload = [{"name": u.name, "b64": base64.b64encode(u.data).decode()} for u in uploads]
    await page.evaluate(
        """(files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (ch) => ch.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name));
            }
            const zone = document.querySelector("#drop");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true,
                                                       cancelable: true}));
            }
        }""",
        payload,
    )
