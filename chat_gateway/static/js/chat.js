// The chat view: conversations (kept in this browser; the gateway keeps each one's history for
// follow-up questions), streamed answers with their sources beside them, citations [n] that
// open the cited chunk, stop (Esc), and resume of an answer after a reload or a lost
// connection (the "resume" message with the turn id and the last offset seen).

import { $, h } from "./dom.js";

const MAX_CONVERSATIONS = 30;
const MAX_TURNS = 40;
const WARMING_AFTER_MS = 2500;
const CITATION = /\[(?:source\s*)?(\d+(?:\s*[-–,]\s*\d+)*)\]/gi;

export class ChatView extends EventTarget {
  constructor(connection, tenant) {
    super();
    this.conn = connection;
    this.key = `parley.chat.${tenant}`;
    this.state = load(this.key);
    this.live = null; // {conv, turn}: the turn being asked or streamed
    this.warming = null;
    this.saveTimer = null;
    this.counts = { total: 0, ready: 0, busy: 0 };
    this.nodes = new WeakMap(); // turn -> its element
    this.frames = new WeakMap(); // turn -> a pending animation frame
    this.messages = $("#messages");
    this.status = $("#chat-status");
    this.findLive();
    this.renderAll();
  }

  // --- state ---------------------------------------------------------------------------------
  get active() {
    return this.state.conversations.find((c) => c.key === this.state.active) || null;
  }

  findLive() {
    for (const conv of this.state.conversations) {
      for (const turn of conv.turns) {
        if (turn.state === "pending" || turn.state === "streaming") this.live = { conv, turn };
      }
    }
  }

  newConversation() {
    if (this.active && this.active.turns.length === 0) return this.active;
    const conv = { key: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
      id: null, title: "New conversation", updated: Date.now(), turns: [] };
    this.state.conversations.unshift(conv);
    this.state.conversations = this.state.conversations.slice(0, MAX_CONVERSATIONS);
    this.state.active = conv.key;
    this.save(true);
    return conv;
  }

  save(now = false) {
    clearTimeout(this.saveTimer);
    const write = () => {
      try {
        localStorage.setItem(this.key, JSON.stringify(this.state));
      } catch {
        // Storage full or disabled: the conversation still works, it is just not kept.
      }
    };
    if (now) write();
    else this.saveTimer = setTimeout(write, 250);
  }

  // --- user actions (bound once by main.js) ---------------------------------------------------
  startNew() {
    this.newConversation();
    this.renderAll();
  }

  ask() {
    const box = $("#question");
    const question = box.value.trim();
    if (!question || this.live) return;
    const conv = this.active || this.newConversation();
    const turn = { question, answer: "", sources: [], citations: [], state: "pending",
      turn_id: null, offset: "0-0", asked: Date.now() };
    conv.turns.push(turn);
    conv.turns = conv.turns.slice(-MAX_TURNS);
    if (conv.turns.length === 1) conv.title = question.slice(0, 80);
    conv.updated = Date.now();
    const message = { type: "ask", question };
    if (conv.id) message.conversation_id = conv.id;
    if (!this.conn.send(message)) {
      turn.state = "error";
      turn.error = { message: "Not connected, so the question was not sent.",
        hint: "Wait for the connection to come back, then ask again." };
    } else {
      this.live = { conv, turn };
      box.value = "";
      this.say("Searching your documents…");
    }
    this.save(true);
    this.renderAll();
  }

  stop() {
    if (!this.live) return false;
    const { turn } = this.live;
    // Before the gateway has named the turn there is nothing to cancel yet: cancel on "turn".
    if (turn.turn_id) this.conn.send({ type: "cancel", turn_id: turn.turn_id });
    else turn.stop = true;
    this.say("Stopping…");
    return true;
  }

  get streaming() {
    return this.live !== null;
  }

  // --- server events -------------------------------------------------------------------------
  /** After (re)connecting: pick up an answer that was streaming when the page or link went. */
  onReady() {
    if (!this.live) return;
    const { turn } = this.live;
    if (turn.turn_id) {
      this.conn.send({ type: "resume", turn_id: turn.turn_id, offset: turn.offset || "0-0" });
      this.say("Resuming the answer…");
    } else {
      this.finish(turn, "error", { message: "The connection was lost before the question reached the server.",
        hint: "Ask it again." });
    }
  }

  onEvent(event) {
    const live = this.live;
    if (!live) return;
    const { conv, turn } = live;
    if (event.turn_id && turn.turn_id && event.turn_id !== turn.turn_id) return; // another turn
    // An error without a turn id is about this turn only while it has none (the ask failed).
    if (event.type === "error" && !event.turn_id && turn.turn_id) return;
    switch (event.type) {
      case "turn":
        turn.turn_id = event.turn_id;
        turn.state = "streaming";
        if (event.conversation_id) conv.id = event.conversation_id;
        if (event.resumed) this.dispatchEvent(new CustomEvent("resumed"));
        if (turn.stop) this.conn.send({ type: "cancel", turn_id: turn.turn_id });
        this.armWarming();
        break;
      case "sources":
        turn.sources = event.sources || [];
        turn.offset = event.offset;
        this.say("Waiting for the model…");
        this.armWarming();
        break;
      case "token":
        if (!turn.answer) this.say("");
        turn.answer += event.text;
        turn.offset = event.offset;
        clearTimeout(this.warming);
        break;
      case "final":
        turn.citations = event.citations || [];
        turn.unsupported = event.unsupported_numbers || [];
        turn.found = event.found !== false;
        // The final text is the checked one (unknown citations removed, uncited sentences
        // attributed): it replaces what was streamed.
        if (typeof event.text === "string") turn.answer = event.text;
        turn.offset = event.offset;
        this.finish(turn, "done");
        return;
      case "cancelled":
        turn.offset = event.offset;
        this.finish(turn, "stopped");
        return;
      case "error":
        if (event.code === "going_away" && turn.turn_id) {
          // The server is shutting down: the socket reconnects (to another replica) and
          // onReady resumes the turn from the last offset seen.
          this.say("The server is restarting: the answer will resume…");
          return;
        }
        this.finish(turn, "error", event);
        return;
      default:
        return;
    }
    this.save();
    this.schedule(turn);
  }

  finish(turn, state, error) {
    turn.state = state;
    if (error) turn.error = { code: error.code, message: error.message, hint: error.hint,
      retry_after: error.retry_after };
    clearTimeout(this.warming);
    this.live = null;
    this.say(state === "stopped" ? "Stopped." : "");
    this.save(true);
    this.renderAll();
  }

  armWarming() {
    clearTimeout(this.warming);
    const turn = this.live?.turn;
    this.warming = setTimeout(() => {
      if (this.live && this.live.turn === turn && !turn.answer) {
        this.say("Waiting for the model to start: it may still be warming up (the first answer after start-up takes longer).");
      }
    }, WARMING_AFTER_MS);
  }

  say(text) {
    this.status.textContent = text;
  }

  // --- rendering -----------------------------------------------------------------------------
  setCounts(counts) {
    this.counts = counts;
    this.renderEmpty();
  }

  renderAll() {
    this.renderConversations();
    const conv = this.active;
    const items = [];
    for (const turn of conv ? conv.turns : []) {
      items.push(h("li", { class: "q" }, turn.question));
      const node = this.turnNode(turn);
      this.nodes.set(turn, node);
      items.push(node);
    }
    this.messages.replaceChildren(...items);
    this.renderEmpty();
    this.renderControls();
    this.scrollToEnd();
  }

  scrollToEnd() {
    this.messages.scrollTop = this.messages.scrollHeight;
  }

  renderControls() {
    $("#stop").hidden = !this.live;
    $("#send").disabled = Boolean(this.live);
  }

  renderConversations() {
    const list = [...this.state.conversations].sort((a, b) => b.updated - a.updated);
    $("#convo-list").replaceChildren(...list.filter((c) => c.turns.length || c.key === this.state.active)
      .map((conv) => h("li", {},
        h("button", { type: "button", "aria-current": conv.key === this.state.active ? "true" : "false",
          title: conv.title, onclick: () => {
            this.state.active = conv.key;
            this.save(true);
            this.renderAll();
          } }, conv.title))));
  }

  renderEmpty() {
    const empty = $("#chat-empty");
    const conv = this.active;
    const blank = !conv || conv.turns.length === 0;
    empty.hidden = !blank;
    if (!blank) return;
    const { total, ready, busy } = this.counts;
    let body;
    if (total === 0) {
      body = [h("p", {}, h("strong", {}, "No documents yet.")),
        h("p", {}, "Upload PDF or Word files, then ask questions about them here."),
        h("button", { type: "button", class: "primary",
          onclick: () => this.dispatchEvent(new CustomEvent("want-documents")) }, "Upload documents")];
    } else if (ready === 0) {
      body = [h("p", {}, h("strong", {}, "Your documents are being indexed.")),
        h("p", {}, `${busy} in progress: you can ask as soon as one shows Ready.`)];
    } else {
      body = [h("p", {}, h("strong", {}, "Ask a question.")),
        h("p", {}, `Answers come from your ${ready} ready document${ready === 1 ? "" : "s"}, with sources you can open.`)];
    }
    empty.replaceChildren(...body);
  }

  schedule(turn) {
    if (this.frames.has(turn)) return;
    this.frames.set(turn, requestAnimationFrame(() => {
      this.frames.delete(turn);
      this.refreshTurn(turn);
    }));
  }

  refreshTurn(turn) {
    const old = this.nodes.get(turn);
    if (!old || !old.isConnected) return;
    const stick = this.messages.scrollHeight - this.messages.scrollTop - this.messages.clientHeight < 40;
    const node = this.turnNode(turn);
    old.replaceWith(node);
    this.nodes.set(turn, node);
    this.renderControls();
    if (stick) this.messages.scrollTop = this.messages.scrollHeight;
  }

  turnNode(turn) {
    const cited = new Set((turn.citations || []).map((c) => c.n));
    const answer = h("div", { class: "answer", dataset: { state: turn.state },
      "aria-busy": turn.state === "pending" || turn.state === "streaming" ? "true" : "false" },
      h("span", { class: "text" }, withCitations(turn.answer, turn.sources, (s) => this.open(s),
        turn.unsupported || [])));
    if (turn.unsupported && turn.unsupported.length) {
      answer.append(h("span", { class: "note warn", role: "note" },
        `Not found in the cited sources: ${turn.unsupported.join(", ")}. Check these figures.`));
    }
    if (turn.state === "pending" && !turn.answer) answer.append(h("span", { class: "note" }, "Searching your documents…"));
    if (turn.state === "streaming" && !turn.answer) answer.append(h("span", { class: "note" }, "Waiting for the model…"));
    if (turn.state === "stopped") answer.append(h("span", { class: "note" }, "Stopped."));
    if (turn.state === "error" && turn.error) {
      const e = turn.error;
      const parts = [e.message, e.hint].filter(Boolean).join(" — ");
      answer.append(h("span", { class: "note bad", role: "alert" }, parts || "Something went wrong."));
      if (e.code === "no_documents") {
        answer.append(h("button", { type: "button", class: "link",
          onclick: () => this.dispatchEvent(new CustomEvent("want-documents")) }, "Upload documents"));
      }
    }
    const sources = turn.sources && turn.sources.length
      ? h("aside", { class: "sources", "aria-label": "Sources" },
        h("h3", {}, "Sources"),
        h("ol", {}, turn.sources.map((s) => h("li", { class: cited.has(s.n) ? "cited" : "" },
          h("button", { type: "button", onclick: () => this.open(s), "aria-label": describe(s) },
            h("span", { class: "n" }, `[${s.n}]`),
            h("span", { class: "where" }, s.document, where(s) ? ` · ${where(s)}` : ""))))))
      : null;
    return h("li", { class: "turn", dataset: { turn: turn.turn_id || "", state: turn.state } }, answer, sources);
  }

  open(source) {
    $("#source-title").textContent = source.document;
    const bits = [`Source [${source.n}]`];
    if (where(source)) bits.push(where(source));
    if (typeof source.score === "number") bits.push(`relevance ${source.score.toFixed(2)}`);
    $("#source-meta").textContent = bits.join(" · ");
    $("#source-text").textContent = source.text || source.snippet || "";
    $("#source-dialog").showModal();
  }
}

/** Where the passage is: "page 3", "slide 2 · Roadmap", "sheet Stock", "§ Install" (from the
 * gateway; sources of older gateways carry only a page). */
function where(source) {
  return source.location || (source.page ? `page ${source.page}` : "");
}

function describe(source) {
  return `Source ${source.n}: ${source.document}${where(source) ? `, ${where(source)}` : ""}`;
}

/** The answer's text with each [n] (also [1, 3], [1-3], [Source 2]) a button opening source n,
 * and each figure in ``unsupported`` (not found in the cited sources) marked. */
function withCitations(text, sources, open, unsupported = []) {
  const byN = new Map((sources || []).map((s) => [s.n, s]));
  const out = [];
  let last = 0;
  for (const match of text.matchAll(CITATION)) {
    const numbers = expand(match[1]);
    if (!numbers.some((n) => byN.has(n))) continue;
    out.push(...markFigures(text.slice(last, match.index), unsupported));
    const inner = [];
    numbers.forEach((n, i) => {
      if (i) inner.push(", ");
      const source = byN.get(n);
      inner.push(source
        ? h("button", { type: "button", class: "cite", onclick: () => open(source),
          "aria-label": describe(source) }, String(n))
        : String(n));
    });
    out.push(h("span", { class: "cites" }, "[", inner, "]"));
    last = match.index + match[0].length;
  }
  out.push(...markFigures(text.slice(last), unsupported));
  return out;
}

/** ``text`` with each occurrence of the figures in ``unsupported`` in a <mark>. */
function markFigures(text, unsupported) {
  if (!unsupported.length) return [text];
  const escaped = unsupported.map((f) => f.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const pattern = new RegExp(`(?<![\\w.,])(?:${escaped.join("|")})(?![\\w])`, "g");
  const out = [];
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    out.push(text.slice(last, match.index));
    out.push(h("mark", { class: "unsupported", title: "not found in the cited sources" }, match[0]));
    last = match.index + match[0].length;
  }
  out.push(text.slice(last));
  return out;
}

function expand(spec) {
  const numbers = [];
  for (const part of spec.split(",")) {
    const [a, b] = part.split(/[-–]/).map((x) => parseInt(x, 10));
    if (Number.isNaN(a)) continue;
    if (b && b >= a && b - a < 20) for (let n = a; n <= b; n += 1) numbers.push(n);
    else numbers.push(a);
  }
  return numbers;
}

function load(key) {
  try {
    const state = JSON.parse(localStorage.getItem(key) || "null");
    if (state && Array.isArray(state.conversations)) return state;
  } catch {
    // unreadable: start afresh
  }
  return { conversations: [], active: null };
}
