// Reading what a profiled server wrote: the functions with the most self time in a V8 CPU profile
// (node --cpu-prof), and the largest kinds of objects in a heap snapshot (--heapsnapshot-signal),
// so that a benchmark can say where the time and the memory go.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

export interface HotFunction {
  fn: string;
  where: string;
  selfMs: number;
  percent: number;
}

function shortUrl(url: string): string {
  const path = url.replace(/^file:\/\//, "");
  if (path.startsWith(ROOT)) return relative(ROOT, path);
  return path === "" ? "(native)" : path.replace(/^.*node_modules\//, "node_modules/");
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/**
 * Sample counts per node, optionally only of samples taken within `window` (microseconds of the
 * monotonic clock, as process.hrtime.bigint() / 1000n gives in any process on the machine).
 */
function hitsPerNode(p: CpuProfile, window?: [number, number]): { hits: Map<number, number>; ms: number } {
  const hits = new Map<number, number>();
  if (!window || !p.samples || !p.timeDeltas) {
    for (const node of p.nodes) hits.set(node.id, node.hitCount ?? 0);
    return { hits, ms: (p.endTime - p.startTime) / 1000 };
  }
  let t = p.startTime;
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i]!;
    if (t < window[0] || t > window[1]) continue;
    first = Math.min(first, t);
    last = Math.max(last, t);
    hits.set(p.samples[i]!, (hits.get(p.samples[i]!) ?? 0) + 1);
  }
  return { hits, ms: last > first ? (last - first) / 1000 : 0 };
}

/** The `n` functions with the most self time, merged by function and location. */
export function topFunctions(cpuprofile: string, n = 25, window?: [number, number]): { totalMs: number; top: HotFunction[] } {
  const p = JSON.parse(readFileSync(cpuprofile, "utf8")) as CpuProfile;
  const { hits: hitMap, ms: totalMs } = hitsPerNode(p, window);
  const totalSamples = [...hitMap.values()].reduce((s, x) => s + x, 0);
  const perSample = totalSamples > 0 ? totalMs / totalSamples : 0;
  const byKey = new Map<string, HotFunction>();
  for (const node of p.nodes) {
    const hits = hitMap.get(node.id) ?? 0;
    if (hits === 0) continue;
    const fn = node.callFrame.functionName || "(anonymous)";
    const where = node.callFrame.url ? `${shortUrl(node.callFrame.url)}:${node.callFrame.lineNumber + 1}` : "(native)";
    const key = `${fn}@${where}`;
    const e = byKey.get(key) ?? { fn, where, selfMs: 0, percent: 0 };
    e.selfMs += hits * perSample;
    byKey.set(key, e);
  }
  const top = [...byKey.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, n);
  for (const t of top) {
    t.percent = Number(((100 * t.selfMs) / Math.max(totalMs, 1e-9)).toFixed(1));
    t.selfMs = Math.round(t.selfMs);
  }
  return { totalMs: Math.round(totalMs), top };
}

/** Microseconds of the monotonic clock that CPU profiles use for their sample times. */
export function monotonicMicros(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Self time by package or source file (node_modules/<pkg>, src/..., node:internal…), largest first. */
export function selfTimeByModule(
  cpuprofile: string,
  n = 15,
  window?: [number, number],
): Array<{ module: string; selfMs: number; percent: number }> {
  const p = JSON.parse(readFileSync(cpuprofile, "utf8")) as CpuProfile;
  const { hits: hitMap, ms: totalMs } = hitsPerNode(p, window);
  const totalSamples = [...hitMap.values()].reduce((s, x) => s + x, 0);
  const perSample = totalSamples > 0 ? totalMs / totalSamples : 0;
  const by = new Map<string, number>();
  for (const node of p.nodes) {
    const hits = hitMap.get(node.id) ?? 0;
    if (hits === 0) continue;
    const url = shortUrl(node.callFrame.url);
    const fn = node.callFrame.functionName;
    let module = url;
    const pkg = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
    if (pkg) module = `node_modules/${pkg[1]}`;
    else if (url.startsWith("node:")) module = url.split(":")[0] === "node" ? url.replace(/^(node:internal\/[^/]+).*$/, "$1") : url;
    else if (url === "(native)") module = fn === "(idle)" || fn === "(garbage collector)" || fn === "(program)" ? fn : `(native) ${fn}`;
    by.set(module, (by.get(module) ?? 0) + hits * perSample);
  }
  return [...by.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([module, ms]) => ({ module, selfMs: Math.round(ms), percent: Number(((100 * ms) / Math.max(totalMs, 1e-9)).toFixed(1)) }));
}

/**
 * The main thread's CPU profile in `dir`: node --cpu-prof writes one per thread
 * (CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile), and tsx's loader runs in a thread of its own.
 */
export function mainThreadProfile(dir: string): string | undefined {
  const files = readdirSync(dir).filter((f) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(f)).sort();
  return files.length > 0 ? join(dir, files[files.length - 1]!) : undefined;
}

/** The newest file in `dir` ending with `suffix`. */
export function newestFile(dir: string, suffix: string): string | undefined {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(suffix))
    .sort();
  return files.length > 0 ? join(dir, files[files.length - 1]!) : undefined;
}

export interface HeapGroup {
  kind: string;
  count: number;
  selfBytes: number;
}

/** Self size of a heap snapshot's nodes grouped by type and constructor/name, largest first. */
export function heapGroups(snapshotPath: string, n = 30): { totalBytes: number; groups: HeapGroup[] } {
  const snap = JSON.parse(readFileSync(snapshotPath, "utf8")) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const stride = fields.length;
  const typeAt = fields.indexOf("type");
  const nameAt = fields.indexOf("name");
  const sizeAt = fields.indexOf("self_size");
  const groups = new Map<string, HeapGroup>();
  let total = 0;
  for (let i = 0; i < snap.nodes.length; i += stride) {
    const type = types[snap.nodes[i + typeAt]!]!;
    const size = snap.nodes[i + sizeAt]!;
    total += size;
    const name = snap.strings[snap.nodes[i + nameAt]!] ?? "";
    const kind = type === "object" || type === "native" || type === "closure" ? `${type}:${name.slice(0, 60)}` : type;
    const g = groups.get(kind) ?? { kind, count: 0, selfBytes: 0 };
    g.count++;
    g.selfBytes += size;
    groups.set(kind, g);
  }
  return { totalBytes: total, groups: [...groups.values()].sort((a, b) => b.selfBytes - a.selfBytes).slice(0, n) };
}
