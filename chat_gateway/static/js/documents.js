// The documents view: upload (drag-and-drop or the file picker, many at once, progress per
// file), the tenant's documents updated live from the websocket's "document" events, delete
// and retry. The server enforces size and type; the checks here only answer faster.

import { $, bytes, h } from "./dom.js";

const STAGES = {
  queued: "Queued",
  extracting: "Reading",
  chunking: "Splitting",
  embedding: "Indexing",
  ready: "Ready",
  failed: "Failed",
};
// Plain words for failure codes, when the record carries no message of its own.
const REASONS = {
  encrypted: "Encrypted: the file is password-protected.",
  no_text_layer: "Scanned or image-only, and OCR found no text to read.",
  garbled_text: "The text layer does not map to readable characters.",
  malformed: "The file is damaged or not a valid document of its type.",
  too_large: "The file is over the size limit.",
  too_many_pages: "The document has more pages (slides) than the limit.",
  unsupported_type: "Not a PDF, Word, PowerPoint, Excel, HTML, Markdown or text file.",
  empty: "The document holds no text.",
  timeout: "Reading the file took too long.",
  extractor_crashed: "The reader crashed on this file.",
  gave_up: "Processing failed repeatedly.",
};
// Failures that trying the same file again cannot fix: the file itself has to change. Retry is
// offered for the others (a time-out, a crash of the reader, a stuck or given-up run).
const PERMANENT = new Set(["encrypted", "unsupported_type", "malformed", "too_large",
  "too_many_pages", "empty", "no_text_layer", "garbled_text"]);
// The gateway takes 2 uploads of a tenant at once (PARLEY_MAX_TENANT_CONCURRENT_UPLOADS) unless
// it says otherwise: a third would be refused (429) while the first two are in flight.
const PARALLEL_UPLOADS = 2;
const TERMINAL = new Set(["ready", "failed", "deleted"]);

/** Whether "Retry" can help a failed document (its reason is not about the file itself). */
export function retryable(doc) {
  return doc.stage === "failed" && !PERMANENT.has(doc.reason);
}

export class DocumentsView extends EventTarget {
  constructor(api, tenant = "") {
    super();
    this.api = api;
    // Failures the user has seen in this view (document id -> updated_at), kept per tenant:
    // the badge counts only failures that still need a look.
    this.seenKey = `parley.seen-failures.${tenant}`;
    this.seen = loadSeen(this.seenKey);
    this.docs = new Map(); // document_id -> status record
    this.limit = 100 * 1024 * 1024;
    this.waiting = [];
    this.running = 0;
    this.list = $("#doc-list");
    this.uploads = $("#uploads");
  }

  // --- the list ----------------------------------------------------------------------------
  async refresh() {
    const asked = Date.now() / 1000;
    const body = await this.api.get("/api/documents");
    this.limit = body.limits.max_upload_bytes;
    this.parallel = body.limits.concurrent_uploads || PARALLEL_UPLOADS;
    $("#limits").textContent = `PDF, Word, PowerPoint, Excel, HTML, Markdown or text, up to ${bytes(this.limit)} each.`;
    const seen = new Set();
    for (const doc of body.documents) {
      seen.add(doc.document_id);
      this.merge(doc);
    }
    // Gone from the list: deleted, unless it changed after we asked (an upload in between).
    for (const [id, doc] of this.docs) {
      if (!seen.has(id) && (doc.updated_at || 0) < asked - 5) this.docs.delete(id);
    }
    this.render();
  }

  /** A "document" event from the websocket, or a record from the API. */
  update(doc) {
    if (doc.stage === "deleted") this.docs.delete(doc.document_id);
    else this.merge(doc);
    this.render();
  }

  merge(doc) {
    const known = this.docs.get(doc.document_id);
    // Events and list replies can cross: keep the newer record.
    if (known && (known.updated_at || 0) > (doc.updated_at || 0)) return;
    this.docs.set(doc.document_id, doc);
  }

  /** total, ready, busy (in progress), failed, and attention: failures not yet seen here. */
  get counts() {
    let ready = 0;
    let busy = 0;
    let failed = 0;
    let attention = 0;
    for (const doc of this.docs.values()) {
      if (doc.stage === "ready") ready += 1;
      else if (doc.stage === "failed") {
        failed += 1;
        if (this.seen[doc.document_id] !== doc.updated_at) attention += 1;
      } else if (!TERMINAL.has(doc.stage)) busy += 1;
    }
    return { total: this.docs.size, ready, busy, failed, attention };
  }

  /** The user is looking at the list: its failures no longer need attention. */
  acknowledge() {
    const seen = {};
    for (const doc of this.docs.values()) {
      if (doc.stage === "failed") seen[doc.document_id] = doc.updated_at;
    }
    this.seen = seen;
    try {
      localStorage.setItem(this.seenKey, JSON.stringify(seen));
    } catch {
      // storage full or disabled: the badge counts them again after a reload
    }
    this.dispatchEvent(new CustomEvent("change", { detail: this.counts }));
  }

  render() {
    const docs = [...this.docs.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
    $("#docs-empty").hidden = docs.length > 0 || this.uploads.children.length > 0;
    const rows = docs.map((doc) => this.row(doc));
    this.list.replaceChildren(...rows);
    this.dispatchEvent(new CustomEvent("change", { detail: this.counts }));
  }

  row(doc) {
    const stage = doc.stage;
    const label = STAGES[stage] || stage;
    const meta = [h("span", { class: "stage", dataset: { stage } }, label)];
    const busy = !TERMINAL.has(stage);
    if (stage === "extracting" && doc.pages_total) {
      meta.push(this.progress(doc.pages_done, doc.pages_total, `Pages read of ${doc.filename}`));
      meta.push(h("span", {}, `${doc.pages_done} of ${doc.pages_total} pages`));
    } else if (stage === "embedding" && doc.chunks) {
      meta.push(this.progress(doc.chunks_done, doc.chunks, `Chunks indexed of ${doc.filename}`));
      meta.push(h("span", {}, `${doc.chunks_done} of ${doc.chunks} chunks`));
    } else if (busy) {
      meta.push(this.progress(null, null, `Progress of ${doc.filename}`));
    }
    if (stage === "ready") {
      if (doc.pages_total) meta.push(h("span", {}, plural(doc.pages_total, "page")));
      meta.push(h("span", { class: "chunks" }, plural(doc.chunks, "chunk")));
    }
    if (doc.message && stage !== "failed") meta.push(h("span", {}, doc.message));
    const actions = h("div", { class: "actions" });
    if (retryable(doc)) {
      actions.append(h("button", { type: "button", onclick: () => this.retry(doc),
        "aria-label": `Retry ${doc.filename}` }, "Retry"));
    }
    actions.append(this.deleteButton(doc));
    return h("li", { class: "document", dataset: { id: doc.document_id, stage } },
      h("span", { class: "name" }, doc.filename || doc.path),
      h("div", { class: "meta" }, meta),
      actions,
      stage === "failed"
        ? h("p", { class: "reason" }, doc.message || REASONS[doc.reason] || doc.reason || "Failed.")
        : null,
    );
  }

  progress(done, total, label) {
    const bar = h("progress", { "aria-label": label });
    if (total) {
      bar.max = total;
      bar.value = done;
    }
    return bar;
  }

  deleteButton(doc) {
    // Two steps instead of a blocking confirm(): the first press asks, the second deletes.
    const button = h("button", { type: "button", class: "quiet" }, "Delete");
    let armed = false;
    button.addEventListener("click", async () => {
      if (!armed) {
        armed = true;
        button.textContent = "Really delete?";
        button.setAttribute("aria-label", `Really delete ${doc.filename}?`);
        setTimeout(() => {
          armed = false;
          if (button.isConnected) button.textContent = "Delete";
        }, 4000);
        return;
      }
      button.disabled = true;
      try {
        const body = await this.api.send("DELETE", `/api/documents/${doc.document_id}`);
        this.update(body.document);
      } catch (err) {
        this.notice(err.message);
        button.disabled = false;
      }
    });
    button.setAttribute("aria-label", `Delete ${doc.filename}`);
    return button;
  }

  async retry(doc) {
    try {
      const body = await this.api.send("POST", `/api/documents/${doc.document_id}/retry`);
      this.update(body.document);
    } catch (err) {
      this.notice(err.message);
    }
  }

  notice(message) {
    this.dispatchEvent(new CustomEvent("notice", { detail: message }));
  }

  // --- uploads -----------------------------------------------------------------------------
  add(files) {
    for (const file of files) {
      const item = { file, row: this.uploadRow(file) };
      this.uploads.append(item.row);
      this.waiting.push(item);
    }
    $("#docs-empty").hidden = true;
    this.pump();
  }

  uploadRow(file) {
    return h("li", { dataset: { state: "waiting", name: file.name } },
      h("span", { class: "file" }, `${file.name} (${bytes(file.size)})`),
      h("progress", { max: file.size || 1, value: 0, "aria-label": `Upload of ${file.name}` }),
      h("span", { class: "msg" }, "waiting"),
    );
  }

  pump() {
    while (this.running < (this.parallel || PARALLEL_UPLOADS) && this.waiting.length) {
      const item = this.waiting.shift();
      this.running += 1;
      this.uploadOne(item).finally(() => {
        this.running -= 1;
        this.pump();
      });
    }
  }

  async uploadOne({ file, row }) {
    const say = (state, text) => {
      row.dataset.state = state;
      row.querySelector(".msg").textContent = text;
    };
    const progress = row.querySelector("progress");
    try {
      const problem = await precheck(file, this.limit);
      if (problem) {
        say("rejected", problem);
        return;
      }
      say("uploading", "uploading…");
      const onProgress = (sent) => {
        progress.value = sent;
        say("uploading", `${Math.floor((100 * sent) / (file.size || 1))}%`);
      };
      const target = await this.api.send("POST", "/api/uploads", { name: file.name, size: file.size });
      let body;
      if (target.method === "sas") {
        await this.api.upload("PUT", target.url, file, target.headers, onProgress, false);
        body = await this.api.send("POST", target.commit.url, target.commit.body);
      } else {
        body = await this.api.upload("POST", target.url, file, {}, onProgress, true);
      }
      progress.value = progress.max;
      say("done", "uploaded");
      this.update(body.document);
      // The document's own row takes over from here.
      setTimeout(() => row.remove(), 1500);
    } catch (err) {
      say("rejected", err.message);
    }
  }
}

function loadSeen(key) {
  try {
    const seen = JSON.parse(localStorage.getItem(key) || "{}");
    return seen && typeof seen === "object" ? seen : {};
  } catch {
    return {};
  }
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** Size and type by the first bytes, as the server checks them (null when fine). */
async function precheck(file, limit) {
  if (file.size === 0) return "the file is empty";
  if (file.size > limit) return `${bytes(file.size)} is over the ${bytes(limit)} limit`;
  const head = new Uint8Array(await file.slice(0, 1024).arrayBuffer());
  const text = String.fromCharCode(...head);
  if (text.includes("%PDF-")) return null;
  if (text.startsWith("PK\x03\x04")) return null; // an Office package (the server checks inside)
  if (text.startsWith("\xd0\xcf\x11\xe0")) return null; // encrypted Office or legacy: server decides
  if (BINARY.some((magic) => text.startsWith(magic))) return "not a supported document";
  // Text (HTML, Markdown, plain) holds no NUL bytes, unless it is UTF-16 or UTF-32 with a BOM.
  const bom = text.startsWith("\xff\xfe") || text.startsWith("\xfe\xff") || text.startsWith("\x00\x00\xfe\xff");
  if (!bom && head.includes(0)) return "not a supported document";
  return null;
}

// Pictures, archives and programs by their first bytes (the server says which it saw).
const BINARY = ["\x89PNG", "\xff\xd8\xff", "GIF8", "II*\x00", "MM\x00*", "\x1f\x8b", "Rar!", "7z\xbc\xaf", "\x7fELF", "MZ"];

/** Files from the picker or dropped anywhere on the page go to ``onFiles`` (bound once). */
export function bindDropZone(onFiles) {
  const drop = $("#drop");
  const input = $("#file-input");
  $("#pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    onFiles([...input.files]);
    input.value = "";
  });
  // Anywhere on the page: a file dropped outside the zone must not replace the page.
  document.addEventListener("dragover", (e) => {
    if (![...(e.dataTransfer?.types || [])].includes("Files")) return;
    e.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (e) => {
    if (e.relatedTarget === null) drop.classList.remove("over");
  });
  document.addEventListener("drop", (e) => {
    if (!e.dataTransfer?.files?.length) return;
    e.preventDefault();
    drop.classList.remove("over");
    onFiles([...e.dataTransfer.files]);
  });
}
