// The websocket to the gateway (docs/chat-protocol.md): authenticates with an "auth" message,
// reconnects with backoff when the connection drops, and hands every server event on.
//
// Events (EventTarget): "state" {state: "connecting"|"online"|"reconnecting"|"offline", retryIn},
// "ready" {tenant, reconnected}, "message" {the server event}, "denied" {message, hint}.
//
// A page reload or a dropped network closes without code 1000, so the gateway keeps a running
// answer going for its resume grace; close() (sign out) sends 1000, which cancels it at once.
//
// The gateway ends a session when its token expires (error "token_expired", close 4401), so an
// online connection sends a current token again every few minutes (an Entra ID token is renewed
// by MSAL before it expires; the gateway then moves the session's expiry). Should the session
// expire all the same, the connection reconnects with a fresh token instead of signing out.

const BACKOFF = [500, 1000, 2000, 4000, 8000];
const CLOSE_UNAUTHENTICATED = 4401;
const REAUTH_MS = 4 * 60 * 1000;

export class Connection extends EventTarget {
  /** `token`: the bearer token, or an async function that returns a current one (Entra ID
   * tokens expire; each connection asks for a fresh one). */
  constructor(token) {
    super();
    this.token = typeof token === "function" ? token : async () => token;
    this.ws = null;
    this.attempt = 0;
    this.readyOnce = false;
    this.stopped = false;
    this.timer = null;
    this.countdown = null;
    this.refresh = null;
    this.expired = false;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.authed;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    clearInterval(this.countdown);
    this.authed = false;
    this.emit("state", { state: this.readyOnce ? "reconnecting" : "connecting", retryIn: 0 });
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    ws.addEventListener("open", async () => {
      let token;
      try {
        token = await this.token();
      } catch (err) {
        this.deny(`no token: ${err.message}`);
        return;
      }
      if (ws === this.ws) ws.send(JSON.stringify({ type: "auth", token }));
    });
    ws.addEventListener("message", (e) => this.onMessage(ws, e));
    ws.addEventListener("close", (e) => this.onClose(ws, e));
    // "error" is always followed by "close", which decides what to do.
  }

  onMessage(ws, e) {
    if (ws !== this.ws) return;
    let event;
    try {
      event = JSON.parse(e.data);
    } catch {
      return;
    }
    if (!this.authed) {
      if (event.type === "ready") {
        this.authed = true;
        this.expired = false;
        const reconnected = this.readyOnce;
        this.readyOnce = true;
        this.attempt = 0;
        clearInterval(this.refresh);
        this.refresh = setInterval(() => this.reauthenticate(ws), REAUTH_MS);
        this.emit("state", { state: "online" });
        this.emit("ready", { tenant: event.tenant, reconnected });
        return;
      }
      if (event.type === "error" && event.code === "unauthenticated") {
        this.deny(event.message, event.hint);
        return;
      }
    }
    if (event.type === "ready" && event.reauthenticated) return;
    if (event.type === "error" && event.code === "token_expired") {
      this.expired = true; // the close that follows reconnects with a fresh token
      return;
    }
    this.emit("message", event);
  }

  async reauthenticate(ws) {
    if (ws !== this.ws || !this.authed) return;
    let token;
    try {
      token = await this.token();
    } catch {
      return; // the session carries on until its token expires; then it reconnects
    }
    if (ws === this.ws && this.authed) ws.send(JSON.stringify({ type: "auth", token }));
  }

  onClose(ws, e) {
    if (ws !== this.ws) return;
    clearInterval(this.refresh);
    this.ws = null;
    this.authed = false;
    if (this.stopped) return;
    if (e.code === CLOSE_UNAUTHENTICATED && !this.expired) {
      this.deny("the token was not accepted");
      return;
    }
    const delay = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
    this.attempt += 1;
    let left = Math.ceil(delay / 1000);
    this.emit("state", { state: this.readyOnce ? "reconnecting" : "connecting", retryIn: left });
    this.countdown = setInterval(() => {
      left = Math.max(0, left - 1);
      this.emit("state", { state: this.readyOnce ? "reconnecting" : "connecting", retryIn: left });
    }, 1000);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  deny(message, hint) {
    this.stopped = true;
    clearInterval(this.refresh);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.emit("state", { state: "offline" });
    this.emit("denied", { message, hint });
  }

  /** Send a client message; false when not connected (the caller says so to the user). */
  send(message) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Close for good ("I am done": a running answer is cancelled). */
  close() {
    this.stopped = true;
    clearInterval(this.refresh);
    clearTimeout(this.timer);
    clearInterval(this.countdown);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.emit("state", { state: "offline" });
  }

  /** Drop the connection as a network failure would (for trying reconnects by hand). */
  drop() {
    if (this.ws) this.ws.close(4000, "dropped by the page");
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
