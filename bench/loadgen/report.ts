// Results of a benchmark run: percentiles, the machine and commit it ran on, the one JSON line on
// stdout, and the row appended to this scenario's table in bench/RESULTS.md (the table is created
// at the end of the file on first use; other sections of the file are left as they are).
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { resolve } from "node:path";

const RESULTS = resolve(import.meta.dirname, "../RESULTS.md");

export interface Summary {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export function summarize(values: number[]): Summary {
  if (values.length === 0) return { n: 0, p50: Number.NaN, p95: Number.NaN, p99: Number.NaN, max: Number.NaN, mean: Number.NaN };
  const s = Float64Array.from(values).sort();
  const at = (p: number) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
  let sum = 0;
  for (const v of s) sum += v;
  return { n: s.length, p50: at(50), p95: at(95), p99: at(99), max: s[s.length - 1]!, mean: sum / s.length };
}

/** Rounds a summary for printing (milliseconds to 0.1 ms). */
export function rounded(s: Summary, digits = 1): Summary {
  const r = (v: number) => (Number.isFinite(v) ? Number(v.toFixed(digits)) : v);
  return { n: s.n, p50: r(s.p50), p95: r(s.p95), p99: r(s.p99), max: r(s.max), mean: r(s.mean) };
}

export function machine(): string {
  const model = cpus()[0]?.model.replace(/\s+/g, " ").trim() ?? "unknown CPU";
  return `${cpus().length} cores (${model}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}`;
}

export function gitCommit(): string {
  try {
    const sha = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: resolve(import.meta.dirname, "..") })
      .toString()
      .trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no", "--", "src", "bin"], {
      cwd: resolve(import.meta.dirname, ".."),
    })
      .toString()
      .trim();
    return dirty ? `${sha} (+ uncommitted changes in src/)` : sha;
  } catch {
    return "unknown";
  }
}

export function command(scenario: string, args: string[]): string {
  return `npm run bench -- ${[scenario, ...args].join(" ")}`;
}

/** Prints the run's one JSON line. */
export function printResult(result: object): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/**
 * Appends a row to the table of `section` in bench/RESULTS.md ("## <section>"), creating the
 * section at the end of the file with `intro` and the header when it is not there yet.
 */
export function appendResultRow(section: string, intro: string, columns: string[], row: string[]): void {
  // BENCH_RECORD=0: an experiment, not a result (the JSON line is still printed).
  if (process.env.BENCH_RECORD === "0") return;
  const text = existsSync(RESULTS) ? readFileSync(RESULTS, "utf8") : "# Benchmark results\n";
  const heading = `## ${section}`;
  const line = `| ${row.map((c) => c.replace(/\|/g, "\\|").replace(/\n/g, " ")).join(" | ")} |`;
  const start = text.split("\n").findIndex((l) => l.trim() === heading);
  let out: string;
  if (start < 0) {
    const header = `| ${columns.join(" | ")} |\n|${columns.map(() => "---").join("|")}|`;
    out = `${text.replace(/\n*$/, "\n")}\n${heading}\n\n${intro.trim()}\n\n${header}\n${line}\n`;
  } else {
    const lines = text.split("\n");
    // The section's table ends at its last "|" line before the next heading.
    let end = lines.length;
    for (let i = start + 1; i < lines.length; i++) {
      if (lines[i]!.startsWith("## ")) {
        end = i;
        break;
      }
    }
    let lastRow = -1;
    for (let i = start + 1; i < end; i++) if (lines[i]!.startsWith("|")) lastRow = i;
    if (lastRow < 0) lines.splice(end, 0, line, "");
    else lines.splice(lastRow + 1, 0, line);
    out = lines.join("\n");
  }
  writeFileSync(RESULTS, out);
}

export function today(): string {
  return new Date().toISOString().slice(0, 16).replace("T", " ");
}

export function mib(bytes: number): number {
  return Number((bytes / 2 ** 20).toFixed(1));
}

export function kib(bytes: number): number {
  return Number((bytes / 1024).toFixed(1));
}
