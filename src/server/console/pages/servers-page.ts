// Every server process of the deployment: which are up, what each holds and moves, and which is
// unhealthy (silent, failing notifications, a slow event loop). A server that writes no heartbeat
// (e.g. a Go Fleetspeak frontend on the same database) still shows, from its clients' records.
import type { ServerView } from "../console-data.js";
import { STREAM_WINDOW_MS } from "../console-data.js";
import { ago, count, duration, rate } from "../format.js";
import { html, jsonBlock, type SafeHtml } from "../html.js";
import type { ChartSpec } from "./charts.js";
import { alignSeries } from "./charts.js";
import { table } from "./layout.js";

/** Event-loop delays worth a look, and worth alarm (ms). */
const LAG_WARN_MS = 100;
const LAG_BAD_MS = 1000;

const STATE_TONE: Record<ServerView["state"], string> = {
  up: "good",
  stopped: "",
  silent: "bad",
  "no heartbeat": "warn",
};

export function stateBadge(state: ServerView["state"]): SafeHtml {
  return html`<span class="pill ${STATE_TONE[state]}">${state}</span>`;
}

function roles(s: ServerView): string {
  const r = s.report;
  if (!r) return "frontend";
  return [r.frontend ? "frontend" : "", r.admin ? "admin" : "", r.console ? "console" : ""].filter(Boolean).join(" + ");
}

function lagTone(ms: number): string {
  return ms >= LAG_BAD_MS ? "bad" : ms >= LAG_WARN_MS ? "warn" : "";
}

function chartOf(s: ServerView): ChartSpec | undefined {
  const samples = s.report?.samples ?? [];
  if (samples.length === 0) return undefined;
  const pts = (f: (x: (typeof samples)[number]) => number) => samples.map((x) => [Math.floor(x.t / 1000), f(x)] as [number, number]);
  return {
    title: "streams, messages/s · event-loop delay p99 (ms, right)",
    rightUnit: "ms",
    ...alignSeries([
      { label: "streams", points: pts((x) => x.streams) },
      { label: "in/s", points: pts((x) => x.inPerS) },
      { label: "out/s", points: pts((x) => x.outPerS) },
      { label: "loop delay p99", points: pts((x) => x.lagP99Ms), right: true },
    ]),
  };
}

export function serversBody(servers: ServerView[], nowMs: number): SafeHtml {
  const charts: Record<string, ChartSpec> = {};
  const rows = servers.map((s) => {
    const r = s.report;
    const last = r?.samples.at(-1);
    const notifyOk = r?.samples.reduce((n, x) => n + x.notifyOk, 0) ?? 0;
    const notifyFailed = r?.samples.reduce((n, x) => n + x.notifyFailed, 0) ?? 0;
    const span = r ? duration(r.samples.length * r.intervalMs) : "";
    const lag = last?.lagP99Ms ?? 0;
    return html`<tr id="${s.id}" class="server">
      <td><span class="mono">${s.id}</span>${r ? html`<div class="muted small">pid ${r.pid} on ${r.host}, up ${duration((s.lastSeenMs ?? nowMs) - r.startedMs)}</div>` : ""}</td>
      <td>${stateBadge(s.state)}</td>
      <td>${roles(s)}</td>
      <td class="num">${last && s.state === "up" ? count(last.streams) : "–"}</td>
      <td class="num">${last && s.state === "up" ? rate(last.inPerS) : "–"}</td>
      <td class="num">${last && s.state === "up" ? rate(last.outPerS) : "–"}</td>
      <td class="num" title="over the last ${span}">${r ? html`${count(notifyOk)} / <span class="${notifyFailed > 0 ? "bad-text" : ""}">${count(notifyFailed)}</span>` : "–"}</td>
      <td class="num ${lagTone(lag)}">${last ? `${lag} ms` : "–"}</td>
      <td class="num">${count(s.recentStreamingClients)}</td>
      <td>${s.lastSeenMs !== undefined ? ago(s.lastSeenMs, nowMs) : "–"}</td>
    </tr>`;
  });
  const cards = servers.flatMap((s) => {
    const spec = chartOf(s);
    if (!spec) return [];
    const key = `server-${Object.keys(charts).length}`;
    charts[key] = spec;
    return [
      html`<figure class="card"><figcaption><span class="mono">${s.id}</span> ${stateBadge(s.state)}
        <span class="muted small">${roles(s)}${s.report?.streamingTo ? html` · notified at <span class="mono">${s.report.streamingTo}</span>` : ""}${workerRange(s.report?.workersStreamingTo)}</span></figcaption>
        <div class="chart" data-chart="${key}"></div></figure>`,
    ];
  });
  const up = servers.filter((s) => s.state === "up").length;
  return html`
<p class="subtitle">${count(up)} of ${count(servers.length)} server processes up. Each writes a heartbeat every few seconds; one that stops writing turns <span class="pill bad">silent</span>.</p>
${table(
  [
    "Server",
    "State",
    "Runs",
    "Streams",
    "In/s",
    "Out/s",
    "Notifications ok / failed (recent)",
    "Loop delay p99",
    `Clients streaming (${duration(STREAM_WINDOW_MS)})`,
    "Last heartbeat",
  ],
  rows,
  "No server has written a heartbeat in the last day, and no client streams to one.",
  "servers",
)}
<section class="cards">${cards}</section>
${jsonBlock("charts", charts)}`;
}

/** "· workers at a … b" for a server whose workers are notified at their own addresses. */
function workerRange(addresses: string[] | undefined) {
  if (!addresses?.length) return "";
  const text = addresses.length === 1 ? addresses[0]! : `${addresses[0]} … ${addresses[addresses.length - 1]}`;
  return html` · workers at <span class="mono">${text}</span>`;
}
