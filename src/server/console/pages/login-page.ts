// The only page shown to a browser that is not signed in: how to get in, and nothing else.
import { html, type SafeHtml } from "../html.js";

export interface LoginOptions {
  tokens: boolean;
  certificates: boolean;
  /** Why the last attempt failed. */
  error?: string;
}

export function loginBody(o: LoginOptions): SafeHtml {
  return html`
<section class="login">
  ${o.error ? html`<p class="error" role="alert">${o.error}</p>` : ""}
  ${
    o.tokens
      ? html`<form method="post" action="/login">
    <label for="token">Login token</label>
    <input id="token" name="token" type="password" autocomplete="off" required autofocus>
    <button type="submit">Sign in</button>
  </form>
  <p>Make a token on a machine that has this admin server's components config:</p>
  <pre>fleetspeak-admin console-token --components_config /etc/fleetspeak-server/server.components.config</pre>`
      : ""
  }
  ${
    o.certificates
      ? html`<p>${o.tokens ? "Or present" : "Present"} a client certificate issued by a CA in
    <code>admin_config.client_ca_certificates</code>: import it into the browser and reload.</p>`
      : ""
  }
</section>`;
}
