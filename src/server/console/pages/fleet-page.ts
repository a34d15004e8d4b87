// The fleet page: is the fleet talking? Totals, how many clients were seen lately, how many stream
// right now, the labels, and a list of clients (the most recently seen, or a search).
import { bytesToHex } from "../../../common/ids.js";
import type { Client } from "../../../gen/fleetspeak_server/admin_pb.js";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { type FleetView, SEEN_WINDOWS } from "../console-data.js";
import { ago, count } from "../format.js";
import { html, type SafeHtml } from "../html.js";
import { stat, table } from "./layout.js";

export interface FleetSearch {
  by: "id" | "label";
  query: string;
  /** For a label search from the label table: the label's service. */
  service?: string;
  /** Why the search could not run. */
  error?: string;
}

export function labelsText(c: Client): SafeHtml {
  return html`${c.labels.map((l) => html`<span class="label" title="${l.serviceName}">${l.label}</span> `)}`;
}

export function clientRows(clients: Client[], nowMs: number): SafeHtml[] {
  return clients.map((c) => {
    const id = bytesToHex(c.clientId);
    const last = c.lastContactTime ? timestampMs(c.lastContactTime) : 0;
    return html`<tr>
      <td><a class="mono" href="/clients/${id}">${id}</a></td>
      <td>${labelsText(c)}</td>
      <td>${last ? ago(last, nowMs) : "never"}</td>
      <td class="mono">${c.lastContactAddress}</td>
      <td class="nowrap">${c.lastContactStreamingTo ? html`stream · <span class="mono">${c.lastContactStreamingTo}</span>` : "poll"}</td>
      <td>${c.blacklisted ? html`<span class="pill bad">blacklisted</span>` : ""}</td>
    </tr>`;
  });
}

export function fleetBody(v: FleetView, search: FleetSearch | undefined, nowMs: number): SafeHtml {
  const seen = SEEN_WINDOWS.map((w, i) => {
    const n = v.counts.seenAfter[i] ?? 0;
    const tone = v.counts.total === 0 ? "" : n === 0 ? "bad" : "";
    return stat(count(n), `seen in the last ${w.label}`, tone);
  });
  const labelRows = v.labels.map(
    (l) => html`<tr>
      <td><a href="/?by=label&amp;service=${encodeURIComponent(l.label.serviceName)}&amp;q=${encodeURIComponent(l.label.label)}"><span class="label">${l.label.label}</span></a></td>
      <td class="muted">${l.label.serviceName}</td>
      <td class="num">${count(l.clients)}</td>
    </tr>`,
  );
  const heading =
    search && !search.error
    ? html`Clients matching ${search.by === "id" ? "ID prefix" : "label"} <q>${search.query}</q>${search.service ? html` <span class="muted">(${search.service})</span>` : ""}`
    : html`Most recently seen clients`;
  return html`
<section class="stats" aria-label="fleet counts">
  ${stat(count(v.counts.total), "clients in total")}
  ${seen}
  ${stat(count(v.streamingNow), "streaming now", v.streamingNow > 0 ? "good" : "")}
</section>
<div class="columns">
<section class="wide">
  <form class="search" method="get" action="/" role="search">
    <select name="by" aria-label="search by">
      <option value="id"${search?.by !== "label" ? html` selected` : ""}>Client ID prefix</option>
      <option value="label"${search?.by === "label" ? html` selected` : ""}>Label</option>
    </select>
    <input name="q" value="${search?.query ?? ""}" placeholder="e.g. 3f2a or linux" aria-label="search for" autocomplete="off">
    <button type="submit">Search</button>
    ${search ? html`<a href="/">clear</a>` : ""}
  </form>
  ${search?.error ? html`<p class="error">${search.error}</p>` : ""}
  <h2>${heading}</h2>
  ${table(
    ["Client ID", "Labels", "Last contact", "From", "Contact (held by)", ""],
    clientRows(v.clients, nowMs),
    search && !search.error ? "No client matches." : "No client has contacted this deployment yet.",
  )}
  ${v.clients.length === v.listLimit ? html`<p class="muted">Showing the first ${v.listLimit}; narrow the search to see others.</p>` : ""}
</section>
<section class="narrow">
  <h2>Clients by label</h2>
  ${table(["Label", "Service", "Clients"], labelRows, "No labels.", "labels")}
</section>
</div>`;
}
