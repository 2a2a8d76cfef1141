// Sign-in with Entra ID in the browser, when the gateway says it checks Entra ID tokens
// (GET /api/auth/config). MSAL.js (@azure/msal-browser, MIT, its single-file build vendored in
// /static/vendor; no build step) runs the authorization code flow with PKCE: the page goes to
// login.microsoftonline.com and comes back to / with a code, which MSAL redeems for tokens kept in
// sessionStorage. The access token for the gateway's scope is asked for again before each use, so
// MSAL refreshes it silently when it expires; when Entra ID wants the user again the portal
// signs out with "Your sign-in expired", and the user signs in again from the card. Without
// Entra ID the portal asks for a token.

const MSAL_SRC = "/static/vendor/msal-browser.min.js";

/** The gateway's Entra ID settings for the portal, or null (sign in with a pasted token). */
export async function entraConfig() {
  try {
    const response = await fetch("/api/auth/config");
    if (!response.ok) return null;
    return (await response.json()).entra || null;
  } catch {
    return null;
  }
}

function loadMsal() {
  if (window.msal) return Promise.resolve(window.msal);
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = MSAL_SRC;
    script.addEventListener("load", () => resolve(window.msal));
    script.addEventListener("error", () => reject(new Error("the sign-in library did not load")));
    document.head.append(script);
  });
}

export class EntraSignIn {
  constructor(config) {
    this.config = config; // {clientId, authority, scopes}
    this.msal = null;
    this.app = null;
  }

  /** Load MSAL and finish a sign-in the page is coming back from (if any). */
  async start() {
    this.msal = await loadMsal();
    this.app = new this.msal.PublicClientApplication({
      auth: {
        clientId: this.config.clientId,
        authority: this.config.authority,
        redirectUri: `${location.origin}/`,
        postLogoutRedirectUri: `${location.origin}/`,
      },
      cache: { cacheLocation: "sessionStorage" },
    });
    await this.app.initialize();
    const result = await this.app.handleRedirectPromise();
    const account = result?.account || this.app.getActiveAccount() || this.app.getAllAccounts()[0];
    if (account) this.app.setActiveAccount(account);
  }

  get account() {
    return this.app?.getActiveAccount() || null;
  }

  /** Go to Entra ID's sign-in page (authorization code + PKCE); the page comes back to /. */
  signIn() {
    return this.app.loginRedirect({ scopes: this.config.scopes });
  }

  /** A valid access token for the gateway (refreshed silently). When Entra ID needs the user
   * again (MSAL's interaction required: consent, an expired session; or the refresh token is
   * refused, invalid_grant) the error is marked `expired`: the portal signs out and says so.
   * Any other failure (Entra ID out of reach) is the caller's to try again. */
  async token() {
    const request = {
      scopes: this.config.scopes,
      account: this.account,
      // The cache and the refresh token, not a hidden iframe after them: the iframe comes back
      // to this page, which does not hand the answer on (MSAL times out after 10 s, an error
      // that tells nothing of the sign-in), and browsers that block third-party cookies
      // answer it login_required anyway.
      cacheLookupPolicy: this.msal.CacheLookupPolicy.AccessTokenAndRefreshToken,
    };
    try {
      return (await this.app.acquireTokenSilent(request)).accessToken;
    } catch (err) {
      if (err instanceof this.msal.InteractionRequiredAuthError
          || err?.errorCode === "invalid_grant") {
        err.expired = true;
      }
      throw err;
    }
  }

  signOut() {
    return this.app.logoutRedirect({ account: this.account });
  }
}
