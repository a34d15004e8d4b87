// The client's logger: the JSON lines of log.ts (pino, same options) without pino. The client's
// bundles (dist/fleetspeak-client.bundle.mjs, the single executable) use this module in place of
// log.ts (scripts/build-tools.mjs, clientLogPlugin): pino brings worker_threads, assert and Node's
// module loader into the process, ~1.8 MiB of the single executable's idle RSS (bench/RESULTS.md,
// shipping). It covers what the client calls: child(), the six level methods with (object, msg),
// (msg) or (Error, msg?), `level`, flush(). Unlike log.ts (pino.destination sync: false) it writes
// each line to stderr synchronously, as Node writes process.stderr on Linux.
import { writeSync } from "node:fs";
import type { Logger } from "./log.js";

export type { Logger };

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
const METHODS = ["trace", "debug", "info", "warn", "error", "fatal"] as const;

/** A JSON string literal, as pino writes one (short plain strings escape only `"` and `\`). */
function quote(s: string): string {
  if (s.length > 100) return JSON.stringify(s);
  let plain = true;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 32) return JSON.stringify(s);
    if (c === 34 || c === 92) plain = false;
  }
  return plain ? `"${s}"` : `"${s.replace(/["\\]/g, "\\$&")}"`;
}

function serializeError(e: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { type: e.constructor?.name ?? "Error", message: e.message, stack: e.stack };
  for (const k of Object.keys(e)) if (out[k] === undefined) out[k] = (e as unknown as Record<string, unknown>)[k];
  return out;
}

function stringifyValue(v: unknown): string | undefined {
  try {
    return JSON.stringify(v);
  } catch {
    const seen = new WeakSet<object>();
    return JSON.stringify(v, (_k, x: unknown) => {
      if (typeof x === "bigint") return Number(x);
      if (typeof x === "object" && x !== null) {
        if (seen.has(x)) return "[Circular]";
        seen.add(x);
      }
      return x;
    });
  }
}

/** A value as pino writes it; undefined for what it leaves out (undefined, functions). */
function valueJson(v: unknown): string | undefined {
  switch (typeof v) {
    case "undefined":
    case "function":
      return undefined;
    case "number":
      return Number.isFinite(v) ? String(v) : "null";
    case "boolean":
      return String(v);
    case "string":
      return quote(v);
    default:
      return stringifyValue(v);
  }
}

/** `,"key":value` for each own property that has a value, in order. */
function properties(obj: Record<string, unknown>): string {
  let out = "";
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    const s = valueJson(key === "err" && v instanceof Error ? serializeError(v) : v);
    if (s !== undefined) out += `,${quote(key)}:${s}`;
  }
  return out;
}

type Sink = (line: string) => void;

class LiteLogger {
  private threshold = 30;
  private label = "info";

  constructor(
    private readonly sink: Sink,
    private readonly chindings: string,
    level: string,
  ) {
    // pino's words for a bad level at creation (FLEETSPEAK_LOG_LEVEL) and when set later.
    if (LEVELS[level] === undefined) throw Error(`default level:${level} must be included in custom levels`);
    this.level = level;
    for (const m of METHODS) {
      const n = LEVELS[m]!;
      (this as unknown as Record<string, unknown>)[m] = (a?: unknown, b?: unknown) => {
        if (n >= this.threshold) this.write(n, a, b);
      };
    }
  }

  get level(): string {
    return this.label;
  }

  set level(level: string) {
    const n = LEVELS[level];
    if (n === undefined) throw Error(`unknown level ${level}`);
    this.threshold = n;
    this.label = level;
  }

  isLevelEnabled(level: string): boolean {
    return (LEVELS[level] ?? Infinity) >= this.threshold && this.threshold !== Infinity;
  }

  child(bindings: Record<string, unknown>): LiteLogger {
    return new LiteLogger(this.sink, this.chindings + properties(bindings), this.label);
  }

  flush(): void {}

  private write(level: number, a: unknown, b: unknown): void {
    let obj: Record<string, unknown> | undefined;
    let msg: unknown;
    if (a instanceof Error) {
      obj = { err: a };
      msg = b ?? a.message;
    } else if (typeof a === "object" && a !== null) {
      obj = a as Record<string, unknown>;
      msg = b;
      if (msg === undefined && obj.msg === undefined && obj.err) msg = (obj.err as { message?: unknown }).message;
    } else {
      msg = a === undefined ? b : a;
    }
    let line = `{"level":${level},"time":"${new Date().toISOString()}"${this.chindings}`;
    if (obj) line += properties(obj);
    const msgJson = valueJson(msg);
    if (msgJson !== undefined) line += `,"msg":${msgJson}`;
    this.sink(`${line}}\n`);
  }
}

/** Writes all of `line` to stderr; waits out EAGAIN (a non-blocking stderr); drops it if stderr is gone. */
function writeStderr(line: string): void {
  let buf = Buffer.from(line);
  for (let tries = 0; buf.length > 0 && tries < 1000; tries++) {
    try {
      buf = buf.subarray(writeSync(2, buf));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") return;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
  }
}

/** A root logger writing to `sink` (tests), with log.ts's base fields. */
export function liteRootLogger(sink: Sink, level: string): Logger {
  return new LiteLogger(sink, `,"pid":${process.pid}`, level) as unknown as Logger;
}

let root: Logger | undefined;

function rootLogger(): Logger {
  root ??= liteRootLogger(writeStderr, process.env.FLEETSPEAK_LOG_LEVEL ?? "info");
  return root;
}

export function createLogger(component: string): Logger {
  return rootLogger().child({ component });
}

export function setLogLevel(level: string): void {
  rootLogger().level = level;
}

/** Nothing to flush: lines are written as they are logged. Kept for log.ts's interface. */
export function flushLogs(): void {}
