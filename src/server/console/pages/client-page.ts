// One client: where it is (last contact, the server holding its stream), what waits for it, what
// failed lately, and what its daemons use.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { bytesToHex } from "../../../common/ids.js";
import type { Message } from "../../../gen/fleetspeak/common_pb.js";
import type { ClientResourceUsageRecord } from "../../../gen/fleetspeak_server/resource_pb.js";
import type { ClientView } from "../console-data.js";
import { ago, agoText, count } from "../format.js";
import { html, jsonBlock, type SafeHtml } from "../html.js";
import type { ChartSpec } from "./charts.js";
import { alignSeries } from "./charts.js";
import { labelsText } from "./fleet-page.js";
import { stat, table } from "./layout.js";
import { stateBadge } from "./servers-page.js";

function msOf(t: { seconds: bigint; nanos: number } | undefined): number {
  return t ? timestampMs(t as Parameters<typeof timestampMs>[0]) : 0;
}

/** CPU and memory of each daemon (scope) over the last day. */
function usageCharts(records: ClientResourceUsageRecord[]): Record<string, ChartSpec> {
  const byScope = new Map<string, ClientResourceUsageRecord[]>();
  for (const r of records) {
    const list = byScope.get(r.scope) ?? [];
    list.push(r);
    byScope.set(r.scope, list);
  }
  const points = (pick: (r: ClientResourceUsageRecord) => number) =>
    [...byScope].map(([scope, rs]) => ({
      label: scope,
      points: rs.map((r) => [Math.floor(msOf(r.serverTimestamp) / 1000), pick(r)] as [number, number]),
    }));
  return {
    cpu: {
      title: "CPU, % of one core (mean user + system)",
      ...alignSeries(points((r) => Math.round((r.meanUserCpuRate + r.meanSystemCpuRate) * 10) / 10)),
    },
    memory: { title: "Resident memory, MiB (mean)", ...alignSeries(points((r) => r.meanResidentMemoryMib)) },
  };
}

function direction(m: Message, clientHex: string): SafeHtml {
  const from = m.source?.clientId && bytesToHex(m.source.clientId) === clientHex;
  return from
    ? html`client → <b>${m.destination?.serviceName ?? ""}</b>`
    : html`<b>${m.source?.serviceName ?? ""}</b> → client`;
}

export function clientBody(v: ClientView, nowMs: number): SafeHtml {
  const c = v.client;
  const id = bytesToHex(c.clientId);
  const last = msOf(c.lastContactTime);
  const pendingTotal = v.pendingByService.reduce((n, p) => n + p.count, 0);
  const streaming = c.lastContactStreamingTo !== "";
  const holder = v.holder;
  const holderText = !streaming
    ? html`none: its last contact was a poll`
    : holder
      ? html`<a href="/servers#${holder.id}" class="mono">${holder.id}</a> ${stateBadge(holder.state)}
         <span class="muted">(notification address <span class="mono">${c.lastContactStreamingTo}</span>)</span>`
      : html`<span class="mono">${c.lastContactStreamingTo}</span> <span class="muted">(no heartbeat from it in the last day)</span>`;
  const pendingRows = v.pendingByService.map(
    (p) => html`<tr><td>${p.service}</td><td class="num">${count(p.count)}</td><td>${ago(p.oldestMs, nowMs)}</td><td>${
      p.nextDueMs <= nowMs
        ? html`now: on the next contact`
        : html`${ago(p.nextDueMs, nowMs)} <span class="muted">(sent; sent again then unless acknowledged)</span>`
    }</td></tr>`,
  );
  const pendingList = v.pending.map(
    (m) => html`<tr><td class="mono">${bytesToHex(m.messageId).slice(0, 16)}…</td><td>${m.source?.serviceName ?? ""} → ${m.destination?.serviceName ?? ""}</td><td>${m.messageType}</td><td>${ago(msOf(m.creationTime), nowMs)}</td></tr>`,
  );
  const failedRows = v.failed.map(
    (m) => html`<tr>
      <td>${m.result?.processedTime ? ago(msOf(m.result.processedTime), nowMs) : ""}</td>
      <td>${direction(m, id)}</td>
      <td>${m.messageType}</td>
      <td class="reason">${m.result?.failedReason ?? ""}</td>
      <td class="mono">${bytesToHex(m.messageId).slice(0, 16)}…</td>
    </tr>`,
  );
  const contactRows = v.contacts.map(
    (ct) => html`<tr><td>${ago(msOf(ct.timestamp), nowMs)}</td><td class="mono">${ct.observedAddress}</td></tr>`,
  );
  const charts = usageCharts(v.usage);
  return html`
<p class="subtitle">${labelsText(c)} ${c.blacklisted ? html`<span class="pill bad">blacklisted: it must re-enroll with a new key</span>` : html`<span class="pill good">not blacklisted</span>`}</p>
<section class="stats" aria-label="client summary">
  ${stat(last ? agoText(last, nowMs) : "never", "last contact", last && nowMs - last > 3_600_000 ? "warn" : "")}
  ${stat(streaming ? "streaming" : "polling", "how it last talked to the server")}
  ${stat(count(pendingTotal), "messages pending", pendingTotal > 0 ? "warn" : "good")}
  ${stat(count(v.failed.length), "failed in recent contacts", v.failed.length > 0 ? "bad" : "")}
</section>
<dl class="facts">
  <dt>Client ID</dt><dd class="mono">${id}</dd>
  <dt>Last contact</dt><dd>${last ? ago(last, nowMs) : "never"} from <span class="mono">${c.lastContactAddress || "unknown"}</span></dd>
  <dt>Stream held by</dt><dd>${holderText}</dd>
  ${c.lastClock ? html`<dt>Client clock at last contact</dt><dd>${new Date(msOf(c.lastClock)).toISOString()}</dd>` : ""}
</dl>
<div class="columns">
<section class="wide">
  <h2>Pending messages</h2>
  ${table(["Service", "Pending", "Oldest created", "Next send"], pendingRows, "Nothing pending: every message to this client was delivered.", "pending-by-service")}
  ${v.pending.length > 0 ? table(["Message", "From → to service", "Type", "Created"], pendingList, "", "pending-list") : ""}
  <h2>Recent failed messages</h2>
  ${table(["When", "Direction", "Type", "Reason", "Message"], failedRows, "No failed message in the client's recent contacts.", "failed")}
  <h2>Resource usage (last 24 h)</h2>
  ${
    v.usage.length === 0
      ? html`<p class="empty">No resource usage reported in the last 24 hours.</p>`
      : html`<div class="chart" data-chart="cpu"></div><div class="chart" data-chart="memory"></div>${jsonBlock("charts", charts)}`
  }
</section>
<section class="narrow">
  <h2>Recent contacts</h2>
  ${table(["When", "From"], contactRows, "No contacts recorded.")}
</section>
</div>`;
}
