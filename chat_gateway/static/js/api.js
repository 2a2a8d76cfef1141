// HTTP calls to the gateway with the bearer token. Errors become Error objects whose message is
// the server's own words ({"error": {"message", "hint"}}).

export class Api {
  /** `token`: the bearer token, or an async function that returns a current one. */
  constructor(token, onUnauthorized) {
    this.token = typeof token === "function" ? token : async () => token;
    this.onUnauthorized = onUnauthorized;
  }

  get(path) {
    return this.send("GET", path);
  }

  async send(method, path, json) {
    const headers = { Authorization: `Bearer ${await this.token()}` };
    const init = { method, headers };
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new Error("the gateway cannot be reached");
    }
    return this.read(response.status, await response.text());
  }

  /** Send a file with progress (fetch has no upload progress): XMLHttpRequest. */
  async upload(method, url, file, headers, onProgress, authed) {
    const token = authed ? await this.token() : null;
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, url);
      if (authed) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      for (const [k, v] of Object.entries(headers || {})) xhr.setRequestHeader(k, v);
      xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded));
      xhr.addEventListener("load", () => {
        if (!authed) { // straight to the blob store through a SAS URL
          if (xhr.status >= 200 && xhr.status < 300) resolve(null);
          else reject(new Error(`the blob store refused the upload (HTTP ${xhr.status})`));
          return;
        }
        try {
          resolve(this.read(xhr.status, xhr.responseText));
        } catch (err) {
          reject(err);
        }
      });
      xhr.addEventListener("error", () => reject(new Error("the upload was interrupted")));
      xhr.send(file);
    });
  }

  read(status, text) {
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (status >= 200 && status < 300) return body;
    if (status === 401 && this.onUnauthorized) this.onUnauthorized();
    const error = body && body.error;
    const message = error ? [error.message, error.hint].filter(Boolean).join(" — ") : `HTTP ${status}`;
    throw new Error(message);
  }
}
