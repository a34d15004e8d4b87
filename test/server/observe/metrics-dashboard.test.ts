// The Grafana dashboard in deploy/grafana only uses series that the server exports.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, it } from "node:test";
import { Metrics } from "../../../src/server/observe/metrics.js";

const DASHBOARD = resolve(import.meta.dirname, "../../../deploy/grafana/fleetspeak-dashboard.json");

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Array<{ expr: string; refId: string }>;
}

const PROMQL_WORDS = new Set([
  "sum", "by", "rate", "histogram_quantile", "topk", "le", "instance", "without", "avg", "max", "min", "count",
]);

/** Series names in a PromQL expression: identifiers not inside {...} or [...] and not functions. */
function seriesNames(expr: string): string[] {
  const bare = expr.replace(/\{[^}]*\}/g, "").replace(/\[[^\]]*\]/g, "").replace(/"[^"]*"/g, "");
  const names: string[] = [];
  for (const m of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const word = m[0];
    const next = bare.slice(m.index! + word.length).trimStart();
    const inGrouping = /\b(by|without)\s*\([^)]*$/.test(bare.slice(0, m.index!));
    if (PROMQL_WORDS.has(word) || next.startsWith("(") || inGrouping) continue;
    names.push(word);
  }
  return names;
}

describe("deploy/grafana/fleetspeak-dashboard.json", () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as {
    uid: string;
    panels: Panel[];
    templating: { list: Array<{ name: string; query?: unknown }> };
  };
  const queries = [
    ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr }))),
    ...dashboard.templating.list
      .filter((v) => typeof v.query === "object")
      .map((v) => ({ panel: `variable ${v.name}`, expr: (v.query as { query: string }).query.replace(/^label_values\((\w+),.*$/, "$1") })),
  ];

  it("uses only series the server's registry exports", async () => {
    const metrics = new Metrics();
    const exported = new Set<string>();
    for (const m of await metrics.registry.getMetricsAsJSON()) {
      exported.add(m.name);
      if (String(m.type) === "histogram") for (const s of ["_bucket", "_sum", "_count"]) exported.add(m.name + s);
    }
    const used = new Set<string>();
    for (const q of queries) {
      const names = seriesNames(q.expr);
      assert.ok(names.length > 0, `${q.panel}: no series found in ${q.expr}`);
      for (const n of names) {
        assert.ok(exported.has(n), `${q.panel}: ${n} is not exported by Metrics`);
        used.add(n);
      }
    }
    for (const wanted of [
      "fleetspeak_frontend_connected_clients",
      "fleetspeak_messages_ingested_total",
      "fleetspeak_messages_sent_total",
      "fleetspeak_server_client_polls_total",
      "fleetspeak_server_datastore_operations_completed_latency_bucket",
      "fleetspeak_notifications_sent_total",
    ]) {
      assert.ok(used.has(wanted), `the dashboard shows ${wanted}`);
    }
  });

  it("has balanced expressions, one data source variable, and panels that do not overlap", () => {
    for (const q of queries) {
      let depth = 0;
      for (const ch of q.expr) {
        depth += ch === "(" ? 1 : ch === ")" ? -1 : 0;
        assert.ok(depth >= 0, `${q.panel}: unbalanced ${q.expr}`);
      }
      assert.equal(depth, 0, `${q.panel}: unbalanced ${q.expr}`);
    }
    const ids = new Set<number>();
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      assert.ok(!ids.has(p.id), `panel id ${p.id} is unique`);
      ids.add(p.id);
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a template.
      if (p.type !== "row") assert.equal(p.datasource?.uid, "${datasource}", `${p.title} uses the data source variable`);
      const { x, y, w, h } = p.gridPos;
      assert.ok(x + w <= 24, `${p.title} fits the 24-column grid`);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          assert.ok(!cells.has(`${i},${j}`), `${p.title} overlaps another panel at ${i},${j}`);
          cells.add(`${i},${j}`);
        }
      }
    }
    assert.ok(dashboard.templating.list.some((v) => v.name === "datasource"));
  });
});
