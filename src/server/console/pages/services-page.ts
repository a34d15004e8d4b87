// Services and queues: per service name, what flows (summed over the servers that are up) and
// what waits (pending messages in the datastore), then the active broadcasts.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { bytesToHex } from "../../../common/ids.js";
import type { ServicesView } from "../console-data.js";
import { ago, count, rate } from "../format.js";
import { html, type SafeHtml } from "../html.js";
import { table } from "./layout.js";
import { BROADCAST_UNLIMITED } from "../../store/store.js";

export function servicesBody(v: ServicesView, nowMs: number): SafeHtml {
  const counted = v.services.reduce(
    (n, s) => n + s.queue.serverDueNow + s.queue.serverDueLater + s.queue.clientPending,
    0,
  );
  const rows = v.services.map(
    (s) => html`<tr class="service">
      <td><b>${s.service}</b></td>
      <td class="num">${rate(s.inPerS)}</td>
      <td class="num">${rate(s.outPerS)}</td>
      <td class="num ${s.errorsPerS > 0 ? "bad" : ""}">${rate(s.errorsPerS)}</td>
      <td class="num">${count(s.errors)}</td>
      <td class="num">${count(s.queue.serverDueNow)}</td>
      <td class="num ${s.queue.serverDueLater > 0 ? "warn" : ""}">${count(s.queue.serverDueLater)}</td>
      <td class="num">${count(s.queue.clientPending)}</td>
    </tr>`,
  );
  const broadcasts = v.broadcasts.map((b) => {
    const exp = b.broadcast.expirationTime ? timestampMs(b.broadcast.expirationTime) : undefined;
    return html`<tr>
      <td class="mono">${bytesToHex(b.broadcast.broadcastId)}</td>
      <td>${b.broadcast.source?.serviceName ?? ""} → ${b.broadcast.messageType}</td>
      <td>${b.broadcast.requiredLabels.map((l) => html`<span class="label" title="${l.serviceName}">${l.label}</span> `)}</td>
      <td class="num">${count(b.sent)} / ${b.limit === BROADCAST_UNLIMITED ? "unlimited" : count(b.limit)}</td>
      <td>${exp !== undefined ? ago(exp, nowMs) : "never"}</td>
    </tr>`;
  });
  return html`
<p class="subtitle">Rates are per second over the servers' last heartbeat interval, summed over the servers that are up; errors count since each server started. Queues are pending messages in the datastore.</p>
${table(
  ["Service", "In/s (from clients)", "Out/s (to clients)", "Errors/s", "Errors", "Due now", "Backlog (retry later)", "Waiting for clients"],
  rows,
  "No service has moved or queued a message.",
  "services",
)}
${counted >= v.queueRowsCounted ? html`<p class="warn-text">The queues hold more than ${count(v.queueRowsCounted)} messages; the counts above cover the first ${count(v.queueRowsCounted)}.</p>` : ""}
<h2>Active broadcasts</h2>
${table(["Broadcast", "From → type", "Required labels", "Sent / limit", "Expires"], broadcasts, "No active broadcast.", "broadcasts")}`;
}
