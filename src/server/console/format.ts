// How the console writes times, counts and IDs: for an operator scanning a page, "3 min ago" says
// more than a timestamp, so the page shows that and keeps the exact UTC time in a tooltip.
import { html, type SafeHtml } from "./html.js";

export function count(n: number | bigint): string {
  return Number(n).toLocaleString("en-US");
}

export function rate(perSecond: number): string {
  if (perSecond === 0) return "0";
  if (perSecond < 0.1) return "<0.1";
  return perSecond < 10 ? perSecond.toFixed(1) : Math.round(perSecond).toLocaleString("en-US");
}

/** "45 s", "12 min", "3 h", "5 d". */
export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s`;
  const min = Math.round(s / 60);
  if (min < 90) return `${min} min`;
  const h = Math.round(min / 60);
  return h < 48 ? `${h} h` : `${Math.round(h / 24)} d`;
}

export function utc(ms: number): string {
  return `${new Date(ms).toISOString().replace("T", " ").slice(0, 19)} UTC`;
}

/** "12 min ago", "in 3 s" or "just now". */
export function agoText(ms: number, nowMs: number): string {
  const d = nowMs - ms;
  return Math.abs(d) < 1000 ? "just now" : d > 0 ? `${duration(d)} ago` : `in ${duration(-d)}`;
}

/** agoText with the UTC time as a tooltip. */
export function ago(ms: number, nowMs: number): SafeHtml {
  return html`<time datetime="${new Date(ms).toISOString()}" title="${utc(ms)}">${agoText(ms, nowMs)}</time>`;
}
