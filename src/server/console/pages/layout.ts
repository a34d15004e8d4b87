// The frame every console page shares: navigation, who is signed in, and the refresh switch. The
// page's own script and styles come from /assets (the Content-Security-Policy allows nothing
// inline), and so does uPlot, served from the npm package: the console works without internet.
import { html, type SafeHtml } from "../html.js";

export type Section = "fleet" | "servers" | "services" | "login";

export interface Frame {
  title: string;
  section: Section;
  /** Who is signed in ("certificate CN=…" or a token's user); absent on the login page. */
  user?: string;
  /** Signed in with a token: offer to sign out. */
  canSignOut?: boolean;
  body: SafeHtml;
  /** When the data was read, ms. */
  nowMs: number;
}

const NAV: Array<[Section, string, string]> = [
  ["fleet", "/", "Fleet"],
  ["servers", "/servers", "Servers"],
  ["services", "/services", "Services & queues"],
];

export function page(f: Frame): SafeHtml {
  const nav =
    f.section === "login"
      ? html``
      : html`<nav>${NAV.map(
          ([s, href, label]) => html`<a href="${href}"${s === f.section ? html` aria-current="page"` : ""}>${label}</a>`,
        )}</nav>
        <div class="session">
          <label class="refresh"><input type="checkbox" id="auto-refresh"> refresh every 15 s</label>
          <span class="user" title="signed in as">${f.user ?? ""}</span>
          ${
            f.canSignOut
              ? html`<form method="post" action="/logout"><button type="submit">Sign out</button></form>`
              : ""
          }
        </div>`;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>${f.title} · Fleetspeak console</title>
<link rel="stylesheet" href="/assets/uPlot.min.css">
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/uPlot.iife.min.js" defer></script>
<script src="/assets/console.js" defer></script>
</head>
<body>
<header>
  <a class="brand" href="/">Fleetspeak <span>console</span></a>
  ${nav}
</header>
<main>
<h1>${f.title}</h1>
${f.body}
</main>
<footer>Read at <time datetime="${new Date(f.nowMs).toISOString()}">${new Date(f.nowMs).toISOString().replace("T", " ").slice(0, 19)} UTC</time> · read-only</footer>
</body>
</html>
`;
}

/** A small headline number with a caption. */
export function stat(value: string, caption: string, tone: "" | "good" | "warn" | "bad" = ""): SafeHtml {
  return html`<div class="stat ${tone}"><div class="value">${value}</div><div class="caption">${caption}</div></div>`;
}

/** A table with a header row, or a quiet line when there are no rows. */
export function table(head: string[], rows: SafeHtml[], empty: string, cls = ""): SafeHtml {
  if (rows.length === 0) return html`<p class="empty">${empty}</p>`;
  return html`<table class="${cls}"><thead><tr>${head.map((h) => html`<th>${h}</th>`)}</tr></thead><tbody>${rows}</tbody></table>`;
}
