// The chat view: conversations (kept by the gateway for the signed-in user, listed from
// GET /api/conversations on any device, opened, renamed and deleted there; this browser keeps a
// copy for a quick start and for resuming), streamed answers with their sources beside them,
// citations [n] that open the cited chunk, stop (Esc), resume of an answer after a reload or a
// lost connection (the "resume" message with the turn id and the last offset seen), and a
// rating with an optional comment under every answer (the "feedback" message).

import { $, h } from "./dom.js";
import { passageNodes } from "./passage.js";

const MAX_CONVERSATIONS = 100;
const MAX_TURNS = 40;
const WARMING_AFTER_MS = 2500;
const CITATION = /\[(?:source\s*)?(\d+(?:\s*[-–,]\s*\d+)*)\]/gi;

export class ChatView extends EventTarget {
  constructor(connection, tenant, api = null) {
    super();
    this.conn = connection;
    this.api = api;
    this.pendingFeedback = new Map(); // turn id -> turn, until the server acknowledges
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

  // --- kept by the server -------------------------------------------------------------------
  /** The conversation list from the server: the same on every device. Conversations not sent
   * yet (no id) stay; ones the server no longer has (deleted elsewhere, expired) go. */
  async syncList() {
    if (!this.api) return;
    let body;
    try {
      body = await this.api.get("/api/conversations");
    } catch {
      return; // offline: the local copy stands
    }
    const byId = new Map(this.state.conversations.filter((c) => c.id).map((c) => [c.id, c]));
    const live = this.live?.conv;
    const kept = body.conversations.map((s) => {
      const conv = byId.get(s.id) || { key: s.id, id: s.id, turns: [] };
      byId.delete(s.id);
      conv.kept = true;
      conv.title = s.title;
      conv.updated = s.updated * 1000;
      if (conv.updated > (conv.synced || 0)) conv.stale = true; // changed since we loaded it
      return conv;
    });
    // Kept here: not sent yet (no id), streaming, or from before the server kept conversations
    // (never listed nor loaded: its next question makes the server keep it).
    const local = this.state.conversations.filter((c) => !c.id || c === live
      || (!c.kept && !c.synced));
    this.state.conversations = [...local, ...kept.filter((c) => c !== live)]
      .slice(0, MAX_CONVERSATIONS);
    if (!this.active) this.state.active = null;
    this.save();
    this.renderAll();
    if (this.active?.stale) await this.loadConversation(this.active);
  }

  /** Fill a conversation with its transcript from the server. */
  async loadConversation(conv) {
    if (!this.api || !conv.id || this.live?.conv === conv) return;
    let body;
    try {
      body = await this.api.get(`/api/conversations/${encodeURIComponent(conv.id)}`);
    } catch (err) {
      this.say(`Could not open the conversation: ${err.message}`);
      return;
    }
    if (this.live?.conv === conv) return; // a question was asked meanwhile
    conv.turns = turnsFrom(body.messages, body.ratings || {});
    conv.title = body.title;
    conv.updated = body.updated * 1000;
    conv.synced = conv.updated;
    conv.stale = false;
    this.save();
    if (this.active === conv) this.renderAll();
  }

  select(conv) {
    this.state.active = conv.key;
    this.save(true);
    this.renderAll();
    if (conv.stale || (conv.id && !conv.turns.length)) this.loadConversation(conv);
  }

  /** Edit the title in place: Enter saves, Escape or leaving the field cancels. */
  startRename(conv, item) {
    const input = h("input", { type: "text", class: "rename", maxlength: "200", value: conv.title,
      "aria-label": `New title for ${conv.title}` });
    let done = false;
    const end = (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== conv.title) this.rename(conv, title);
      else this.renderConversations();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        end(true);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation(); // not a "stop the answer"
        end(false);
      }
    });
    input.addEventListener("blur", () => end(false));
    item.replaceChildren(input);
    input.focus();
    input.select();
  }

  async rename(conv, title) {
    if (conv.id && this.api) {
      try {
        const body = await this.api.send("PATCH", `/api/conversations/${encodeURIComponent(conv.id)}`,
          { title });
        conv.title = body.title;
      } catch (err) {
        this.say(`Could not rename it: ${err.message}`);
        this.renderConversations();
        return;
      }
    } else {
      conv.title = title;
    }
    this.save(true);
    this.renderConversations();
  }

  /** Two steps instead of a blocking confirm(), as for documents: the first press asks. */
  deleteButton(conv) {
    const label = `Delete ${conv.title}`;
    const button = h("button", { type: "button", class: "tool quiet", title: "Delete",
      "aria-label": label }, "\u00D7");
    let armed = false;
    button.addEventListener("click", () => {
      if (armed) {
        this.remove(conv);
        return;
      }
      armed = true;
      button.textContent = "Delete?";
      button.classList.add("armed");
      button.setAttribute("aria-label", `Really delete ${conv.title}? It goes on every device.`);
      setTimeout(() => {
        armed = false;
        if (!button.isConnected) return;
        button.textContent = "\u00D7";
        button.classList.remove("armed");
        button.setAttribute("aria-label", label);
      }, 4000);
    });
    return button;
  }

  async remove(conv) {
    if (this.live?.conv === conv) {
      this.say("Stop the answer before deleting its conversation.");
      return;
    }
    if (conv.id && this.api) {
      try {
        await this.api.send("DELETE", `/api/conversations/${encodeURIComponent(conv.id)}`);
      } catch (err) {
        if (!/no such conversation/.test(err.message)) {
          this.say(`Could not delete it: ${err.message}`);
          return;
        }
      }
    }
    this.state.conversations = this.state.conversations.filter((c) => c !== conv);
    if (this.state.active === conv.key) this.state.active = null;
    this.save(true);
    this.renderAll();
  }

  // --- feedback ------------------------------------------------------------------------------
  rate(turn, rating) {
    turn.rating = rating;
    turn.commenting = true;
    this.sendFeedback(turn, null);
    this.refreshTurn(turn);
    this.nodes.get(turn)?.querySelector(".feedback input")?.focus();
  }

  sendFeedback(turn, comment) {
    const conv = this.state.conversations.find((c) => c.turns.includes(turn));
    const message = { type: "feedback", turn_id: turn.turn_id, rating: turn.rating };
    if (comment) message.comment = comment;
    if (conv?.id) message.conversation_id = conv.id;
    if (this.conn.send(message)) this.pendingFeedback.set(turn.turn_id, turn);
    else this.feedbackNote(turn, "Not connected: the rating was not sent.");
    this.save();
  }

  onFeedback(event) {
    const turn = this.pendingFeedback.get(event.turn_id);
    if (!turn) return;
    this.pendingFeedback.delete(event.turn_id);
    if (event.type === "error") {
      this.feedbackNote(turn, `The rating was not saved: ${event.message}`);
      return;
    }
    turn.rating = event.rating;
    turn.comment = event.comment || turn.comment || null;
    this.save();
    this.feedbackNote(turn, event.comment ? "Thanks: your comment was sent." : "Thanks for the rating.");
  }

  /** Say something under the rating buttons without re-rendering (a comment may be typed). */
  feedbackNote(turn, text) {
    turn.feedbackNote = text;
    const node = this.nodes.get(turn)?.querySelector(".feedback-note");
    if (node) node.textContent = text;
  }

  feedbackNode(turn) {
    const button = (rating, label, symbol) => h("button", { type: "button", class: "rate",
      "aria-pressed": turn.rating === rating ? "true" : "false", "aria-label": label, title: label,
      onclick: () => this.rate(turn, rating) }, symbol);
    let form = null;
    if (turn.commenting) {
      const input = h("input", { type: "text", maxlength: "2000", value: turn.comment || "",
        "aria-label": "Comment on this answer (optional)",
        placeholder: turn.rating === "down" ? "What was wrong? (optional)" : "Any comment? (optional)" });
      form = h("form", { onsubmit: (e) => {
        e.preventDefault();
        turn.commenting = false;
        this.sendFeedback(turn, input.value.trim());
        this.refreshTurn(turn);
      } }, input, h("button", { type: "submit" }, "Send"));
    }
    return h("div", { class: "feedback", role: "group", "aria-label": "Rate this answer" },
      button("up", "Good answer", "\u{1F44D}"), button("down", "Bad answer", "\u{1F44E}"), form,
      h("span", { class: "feedback-note", role: "status" }, turn.feedbackNote || ""));
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
    this.syncList();
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
    if (event.type === "feedback" || (event.type === "error" && this.pendingFeedback.has(event.turn_id)
        && this.live?.turn.turn_id !== event.turn_id)) {
      this.onFeedback(event);
      return;
    }
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
        conv.synced = Date.now(); // the server recorded this answer before sending it
        this.finish(turn, "done");
        this.syncList(); // its title and place in the list, as every device sees them
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
    $("#convo-list").replaceChildren(...list.filter((c) => c.turns.length || c.id || c.key === this.state.active)
      .map((conv) => h("li", { dataset: { id: conv.id || "" } },
        h("button", { type: "button", class: "open",
          "aria-current": conv.key === this.state.active ? "true" : "false",
          title: conv.title, onclick: () => this.select(conv) }, conv.title),
        h("button", { type: "button", class: "tool quiet", title: "Rename",
          "aria-label": `Rename ${conv.title}`,
          onclick: (e) => this.startRename(conv, e.currentTarget.parentElement) }, "\u270E"),
        this.deleteButton(conv))));
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
    if (turn.state === "unanswered") {
      answer.append(h("span", { class: "note" }, "No answer was kept for this question (it was stopped, failed, or is still being answered elsewhere)."));
    }
    if (turn.state === "done" && turn.turn_id) answer.append(this.feedbackNode(turn));
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
    $("#source-text").replaceChildren(...passageNodes(source.text || source.snippet || ""));
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

/** Turns from a kept transcript (GET /api/conversations/{id}). */
function turnsFrom(messages, ratings) {
  const turns = [];
  const byId = new Map();
  for (const m of messages) {
    if (m.role === "user") {
      const turn = { question: m.content, answer: "", sources: [], citations: [], state: "unanswered",
        turn_id: m.turn_id, offset: "0-0", asked: (m.at || 0) * 1000, rating: ratings[m.turn_id] || null };
      turns.push(turn);
      byId.set(m.turn_id, turn);
    } else if (m.role === "assistant" && byId.has(m.turn_id)) {
      Object.assign(byId.get(m.turn_id), { answer: m.content, sources: m.sources || [],
        citations: m.citations || [], model: m.model || null,
        unsupported: m.unsupported_numbers || [], state: "done" });
    }
  }
  return turns.slice(-MAX_TURNS);
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
