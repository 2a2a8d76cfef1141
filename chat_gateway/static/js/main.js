// The portal's entry point: sign in, the connection state, the two views (Chat, Documents) and
// the keyboard shortcuts. No framework and no build step: ES modules served by the gateway.
// Sign-in: with Entra ID in the browser when the gateway is configured for it (signin.js), else
// with a pasted token (kept in localStorage).

import { Api } from "./api.js";
import { ChatView } from "./chat.js";
import { DocumentsView, bindDropZone } from "./documents.js";
import { $ } from "./dom.js";
import { EntraSignIn, entraConfig } from "./signin.js";
import { Connection } from "./socket.js";

const TOKEN_KEY = "parley.token";
const SAFETY_REFRESH_MS = 10000;

const app = {
  conn: null,
  api: null,
  docs: null,
  chat: null,
  bannerTimer: null,
  refreshTimer: null,
  entra: null, // EntraSignIn when the gateway checks Entra ID tokens
};
// For people poking at the portal from the console (and the browser tests).
window.parley = app;

function show(view) {
  const signedIn = view !== "signin";
  $("#view-signin").hidden = signedIn;
  $("#view-chat").hidden = view !== "chat";
  $("#view-docs").hidden = view !== "docs";
  $(".tabs").hidden = !signedIn;
  $("#signout").hidden = !signedIn;
  $("#tab-chat").setAttribute("aria-current", view === "chat" ? "page" : "false");
  $("#tab-docs").setAttribute("aria-current", view === "docs" ? "page" : "false");
  if (signedIn) {
    const hash = view === "docs" ? "#documents" : "#chat";
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }
}

function go(view) {
  show(view);
  if (view === "docs") app.docs?.acknowledge();
  if (view === "chat") {
    app.chat?.scrollToEnd();
    $("#question").focus();
  }
  else if (view === "docs") $("#pick").focus();
}

function banner(text, kind = "warn", hideAfter = 0) {
  const el = $("#banner");
  clearTimeout(app.bannerTimer);
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
  if (hideAfter) app.bannerTimer = setTimeout(() => { el.hidden = true; }, hideAfter);
}

function connectionState({ state, retryIn }) {
  const el = $("#conn");
  el.dataset.state = state;
  const words = {
    online: "Connected",
    connecting: retryIn ? `Connecting in ${retryIn} s…` : "Connecting…",
    reconnecting: retryIn ? `Reconnecting in ${retryIn} s…` : "Reconnecting…",
    offline: "Offline",
  };
  el.textContent = words[state] || state;
  if (state === "reconnecting") {
    const busy = app.chat && app.chat.streaming ? " The answer will resume where it stopped." : "";
    banner(`Connection lost: ${words.reconnecting.toLowerCase()}${busy}`);
  }
}

function signIn(token) {
  if (app.conn) app.conn.close();
  $("#signin-error").textContent = "";
  const conn = new Connection(token);
  app.conn = conn;
  conn.addEventListener("state", (e) => connectionState(e.detail));
  conn.addEventListener("denied", (e) => {
    const { message, hint } = e.detail;
    signOut(`Sign-in failed: ${message}${hint ? ` (${hint})` : ""}.`);
  });
  conn.addEventListener("expired", signInExpired);
  conn.addEventListener("ready", (e) => onReady(token, e.detail));
  conn.addEventListener("message", (e) => onMessage(e.detail));
  conn.start();
}

async function onReady(token, { tenant, reconnected }) {
  if (!app.chat) {
    if (typeof token === "string") localStorage.setItem(TOKEN_KEY, token);
    app.api = new Api(token, signInExpired);
    app.docs = new DocumentsView(app.api, tenant);
    app.docs.addEventListener("change", (e) => {
      const { busy, attention } = e.detail;
      // What needs the user: work in progress, or failures not yet seen in the list.
      if (attention && !$("#view-docs").hidden) {
        app.docs.acknowledge(); // seen as it happens
        return;
      }
      const badge = $("#docs-badge");
      badge.textContent = busy ? `${busy} in progress` : attention ? `${attention} failed` : "";
      badge.dataset.kind = !busy && attention ? "bad" : "";
      badge.title = !busy && attention ? "documents that failed since you last looked" : "";
      app.chat?.setCounts(e.detail);
    });
    app.docs.addEventListener("notice", (e) => banner(e.detail, "warn", 6000));
    app.chat = new ChatView(app.conn, tenant, app.api);
    app.chat.addEventListener("want-documents", () => go("docs"));
    app.chat.addEventListener("resumed", () => banner("Reconnected: the answer resumed.", "ok", 3000));
    const who = app.entra?.account?.username;
    $("#who").textContent = who ? `${who} (tenant ${tenant})` : `tenant ${tenant}`;
    go(location.hash === "#documents" ? "docs" : "chat");
    scheduleRefresh();
  } else if (reconnected) {
    banner("Reconnected.", "ok", 3000);
  }
  app.chat.onReady();
  try {
    await app.docs.refresh();
    // Document events flow from the moment the gateway starts reading this tenant's progress
    // (about a second after "ready"); a second look closes that gap.
    setTimeout(() => app.docs?.refresh().catch(() => {}), 1500);
  } catch (err) {
    banner(`Could not load the documents: ${err.message}`, "warn", 6000);
  }
}

function scheduleRefresh() {
  clearInterval(app.refreshTimer);
  // A safety net under the live events while something is being processed.
  app.refreshTimer = setInterval(() => {
    if (app.docs && app.docs.counts.busy && app.conn?.open) app.docs.refresh().catch(() => {});
  }, SAFETY_REFRESH_MS);
}

function onMessage(event) {
  if (event.type === "document") app.docs?.update(event);
  else app.chat?.onEvent(event);
}

/** The token ran out (a pasted one that expired, or one the gateway refuses now): say so, and
 * what to do, on the sign-in card. */
function signInExpired() {
  signOut(app.entra ? "Your sign-in expired: sign in again."
    : "Your sign-in expired: sign in again with a fresh token.");
}

function signOut(message = "") {
  localStorage.removeItem(TOKEN_KEY);
  if (app.conn) app.conn.close();
  clearInterval(app.refreshTimer);
  Object.assign(app, { conn: null, api: null, docs: null, chat: null });
  $("#messages").replaceChildren();
  $("#doc-list").replaceChildren();
  $("#uploads").replaceChildren();
  $("#who").textContent = "";
  $("#conn").textContent = "";
  banner("");
  show("signin");
  $(app.entra ? "#signin-entra-error" : "#signin-error").textContent = message;
  $("#token").value = "";
  $(app.entra ? "#signin-microsoft" : "#token").focus();
}

/** Entra ID sign-in: finish a redirect back from Entra ID, then connect if someone is signed in. */
async function startEntra(config) {
  app.entra = new EntraSignIn(config);
  $("#signin-form").hidden = true;
  $("#signin-entra").hidden = false;
  $("#signin-microsoft").addEventListener("click", () => {
    app.entra.signIn().catch((err) => signOut(`Sign-in failed: ${err.message}.`));
  });
  try {
    await app.entra.start();
  } catch (err) {
    signOut(`Sign-in failed: ${err.message}.`);
    return;
  } finally {
    // MSAL refuses a sign-in before it has initialised: a click that came earlier failed
    // with "uninitialized_public_client_application" instead of going to Microsoft.
    $("#signin-microsoft").disabled = false;
  }
  if (!app.entra.account) {
    show("signin");
    $("#signin-microsoft").focus();
    return;
  }
  show(location.hash === "#documents" ? "docs" : "chat");
  signIn(() => app.entra.token());
}

async function init() {
  $("#signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("#token").value.trim();
    if (token) signIn(token);
  });
  $("#signout").addEventListener("click", () => {
    const entra = app.entra;
    signOut();
    if (entra?.account) entra.signOut().catch(() => {});
  });
  $("#tab-chat").addEventListener("click", () => go("chat"));
  $("#tab-docs").addEventListener("click", () => go("docs"));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("#source-dialog").open && app.chat?.stop()) e.preventDefault();
  });
  $("#ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    app.chat?.ask();
  });
  $("#question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      app.chat?.ask();
    }
  });
  $("#stop").addEventListener("click", () => app.chat?.stop());
  $("#new-chat").addEventListener("click", () => {
    app.chat?.startNew();
    $("#question").focus();
  });
  window.addEventListener("pagehide", () => app.chat?.save(true));
  bindDropZone((files) => {
    if (!app.docs) return;
    show("docs");
    app.docs.add(files);
  });
  // Which sign-in to offer is known once the gateway answers: neither card shows before.
  const config = await entraConfig();
  if (config) {
    await startEntra(config);
    return;
  }
  $("#signin-form").hidden = false;
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) {
    show(location.hash === "#documents" ? "docs" : "chat");
    signIn(token);
  } else {
    show("signin");
    $("#token").focus();
  }
}

init();
