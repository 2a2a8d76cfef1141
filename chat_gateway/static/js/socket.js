// The websocket to the gateway (docs/chat-protocol.md): authenticates with an "auth" message,
// reconnects with backoff when the connection drops, and hands every server event on.
//
// Events (EventTarget): "state" {state: "connecting"|"online"|"reconnecting"|"offline", retryIn},
// "ready" {tenant, reconnected}, "message" {the server event}, "denied" {message, hint},
// "expired" {} (a token that cannot be renewed expired: the user signs in again).
//
// A page reload or a dropped network closes without code 1000, so the gateway keeps a running
// answer going for its resume grace; close() (sign out) sends 1000, which cancels it at once.
//
// The gateway ends a session when its token expires (error "token_expired", close 4401); its
// "ready" says how long the session has ("expires_in", none for a token that does not expire).
// With a token that can be renewed (a function: Entra ID through MSAL), the connection sends a
// fresh one before then, at the later of half the time left and RENEW_BEFORE_S before the end;
// the gateway answers "ready" "reauthenticated" with the new time left, and so on. Should the
// session expire all the same, the connection reconnects with a fresh token instead of signing
// out. A pasted token cannot be renewed: when it expires the connection ends with "expired",
// and does not reconnect with the same expired token.
//
// A token function that fails is not a reason to sign out by itself: once connected, a token
// that could not be fetched (Entra ID out of reach) is tried again with the reconnect backoff
// ("reconnecting" with its countdown), and a failed renewal again while the session lasts. Only
// an error marked `expired` (the identity provider wants the user again: MSAL's interaction
// required, a refused refresh token) ends the connection with "expired".

const BACKOFF = [500, 1000, 2000, 4000, 8000];
const CLOSE_UNAUTHENTICATED = 4401;
// MSAL hands out a new access token once the one it holds has under 5 minutes left (its
// tokenRenewalOffsetSeconds), so the token asked for 4 minutes before the end is a new one.
const RENEW_BEFORE_S = 4 * 60;
const RENEW_MIN_MS = 1000;
const RENEW_MAX_MS = 24 * 3600 * 1000; // a timer past 2^31 ms (24.8 days) would fire at once

export class Connection extends EventTarget {
  /** `token`: the bearer token, or an async function that returns a current one (Entra ID
   * tokens expire; each connection asks for a fresh one). */
  constructor(token) {
    super();
    this.renewable = typeof token === "function";
    this.token = this.renewable ? token : async () => token;
    this.ws = null;
    this.attempt = 0;
    this.readyOnce = false;
    this.stopped = false;
    this.timer = null;
    this.countdown = null;
    this.attempting = null; // the connect() in progress (a later one supersedes it)
    this.refresh = null; // the timer of the next renewal
    this.renewing = false; // a fresh token was sent and not answered yet
    this.endsAt = null; // Date.now() when the session ends unless renewed; null: never
    this.expired = false;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.authed;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  async connect() {
    clearTimeout(this.timer);
    clearInterval(this.countdown);
    this.authed = false;
    this.emit("state", { state: this.readyOnce ? "reconnecting" : "connecting", retryIn: 0 });
    // The token first, then the socket: no socket waits on a token that may take a while (or
    // not come: Entra ID out of reach), and a failure is handled before anything is open.
    const attempt = {};
    this.attempting = attempt;
    let token;
    try {
      token = await this.token();
    } catch (err) {
      if (this.stopped || this.attempting !== attempt) return;
      if (err?.expired) this.end("expired", {}); // the user must sign in again
      // Once signed in, a token that could not be fetched (a network blip on the way to Entra
      // ID) is tried again with the reconnect backoff: the sign-in itself is still good.
      else if (this.readyOnce) this.retry();
      else this.deny(`no token: ${err.message}`);
      return;
    }
    if (this.stopped || this.attempting !== attempt) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    ws.addEventListener("open", () => {
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
        this.scheduleRenewal(ws, event.expires_in);
        this.emit("state", { state: "online" });
        this.emit("ready", { tenant: event.tenant, reconnected });
        return;
      }
      if (event.type === "error" && event.code === "unauthenticated") {
        this.deny(event.message, event.hint);
        return;
      }
    }
    if (event.type === "ready" && event.reauthenticated) {
      this.scheduleRenewal(ws, event.expires_in);
      return;
    }
    if (event.type === "error" && event.code === "unauthenticated" && this.renewing) {
      this.renewing = false; // the fresh token was refused: the session carries on as it was
      this.renewLater(ws);
      return;
    }
    if (event.type === "error" && event.code === "token_expired") {
      if (!this.renewable) {
        this.end("expired", {});
        return;
      }
      this.expired = true; // the close that follows reconnects with a fresh token
      return;
    }
    this.emit("message", event);
  }

  /** Renew the token before the session ends, `expiresIn` seconds from now (the gateway's
   * word; undefined for a token that does not expire). */
  scheduleRenewal(ws, expiresIn) {
    clearTimeout(this.refresh);
    this.renewing = false;
    if (typeof expiresIn !== "number") {
      this.endsAt = null;
      return;
    }
    this.endsAt = Date.now() + expiresIn * 1000;
    if (!this.renewable) return;
    const delay = Math.max(expiresIn / 2, expiresIn - RENEW_BEFORE_S) * 1000;
    this.refresh = setTimeout(() => this.reauthenticate(ws),
      Math.min(RENEW_MAX_MS, Math.max(RENEW_MIN_MS, delay)));
  }

  /** A renewal failed: try again in half the time left (while there is some); should the
   * session end first, the connection reconnects with a fresh token. */
  renewLater(ws) {
    if (this.endsAt === null) return;
    const left = (this.endsAt - Date.now()) / 1000;
    if (left > 2) this.scheduleRenewal(ws, left);
  }

  async reauthenticate(ws) {
    if (ws !== this.ws || !this.authed) return;
    let token;
    try {
      token = await this.token();
    } catch (err) {
      // Not a reason to sign out while the session lasts: a network failure is tried again;
      // a sign-in that has expired is found again (and said) at the reconnect.
      if (!err?.expired) this.renewLater(ws);
      return;
    }
    if (ws !== this.ws || !this.authed) return;
    this.renewing = true;
    ws.send(JSON.stringify({ type: "auth", token }));
  }

  onClose(ws, e) {
    if (ws !== this.ws) return;
    clearTimeout(this.refresh);
    this.ws = null;
    this.authed = false;
    if (this.stopped) return;
    if (e.code === CLOSE_UNAUTHENTICATED && !this.expired) {
      this.deny("the token was not accepted");
      return;
    }
    this.retry();
  }

  /** Connect again after the next backoff delay, counting it down. */
  retry() {
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
    this.end("denied", { message, hint });
  }

  /** Stop for good and say why ("denied", "expired"). */
  end(type, detail) {
    this.stopped = true;
    clearTimeout(this.refresh);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.emit("state", { state: "offline" });
    this.emit(type, detail);
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
    clearTimeout(this.refresh);
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
