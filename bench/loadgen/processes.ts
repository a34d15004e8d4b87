// Child processes of a benchmark run (servers, load generators, HAProxy, Mosquitto), supervised
// as the tests' are: each one is killed when the benchmark process exits, whatever the reason
// (end, error, Ctrl-C). Also /proc readings: memory, CPU and file descriptors of processes.
import { type ChildProcess, spawn, type SpawnOptions } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { manage } from "../../test/support/processes.js";

let hooked = false;

/** Ctrl-C or SIGTERM ends the run through process.exit, whose hook kills every child. */
function hookSignals(): void {
  if (hooked) return;
  hooked = true;
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      console.error(`benchmark interrupted (${sig}); stopping its processes`);
      process.exit(130);
    });
  }
}

export interface BenchProcess {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** The last MiB of stdout + stderr. */
  output(): string;
  /** Resolves when the output matches; rejects if the process exits first or on timeout. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<void>;
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<void>;
}

/** The tests' process supervisor (test/support/processes.ts), with the benchmarks' defaults. */
export function track(name: string, proc: ChildProcess): BenchProcess {
  hookSignals();
  const m = manage(name, proc);
  return {
    name,
    proc,
    pid: m.pid,
    exited: m.exited,
    output: m.output,
    waitFor: async (re, timeoutMs = 30_000) => {
      await m.waitFor(re, timeoutMs);
    },
    stop: async (graceMs = 10_000) => {
      await m.stop("SIGTERM", graceMs);
    },
  };
}

export function start(name: string, command: string, args: string[], opts: SpawnOptions = {}): BenchProcess {
  return track(name, spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...opts }));
}

/** Resident set size of a process, bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/**
 * Proportional set size (Pss in /proc/<pid>/smaps_rollup): resident memory with each page shared by
 * k processes counted 1/k in each. Summed over a server's processes it is the memory they take
 * together; summed RSS counts the pages of the node binary that every worker maps once per worker
 * (~47 MiB each here).
 */
export function pssBytes(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
  if (!m) throw new Error(`no Pss in /proc/${pid}/smaps_rollup`);
  return Number(m[1]) * 1024;
}

/** A process's resident memory split as /proc/<pid>/status gives it: anonymous (heap, stacks) and file-backed (the executable's and libraries' pages). */
export function rssSplit(pid: number): { anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { anon: kb("RssAnon"), file: kb("RssFile") + kb("RssShmem") };
}

/** CPU time (user + system) used by a process so far, seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may contain spaces) start at state (field 3).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return ticks / 100; // CLK_TCK is 100 on Linux
}

/** A process and its descendants (a server's worker processes), parents first. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      for (const p of readFileSync(`/proc/${out[i]}/task/${out[i]}/children`, "utf8").trim().split(/\s+/)) if (p) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

/** Sums f over a process and its descendants, skipping those that exit meanwhile. */
function overTree(pid: number, f: (pid: number) => number): number {
  let sum = 0;
  for (const p of processTree(pid)) {
    try {
      sum += f(p);
    } catch {
      // exited between the listing and the reading
    }
  }
  return sum;
}

/** RSS of a server with every worker process, bytes. */
export function treeRssBytes(pid: number): number {
  return overTree(pid, rssBytes);
}

/** Pss of a server with every worker process: the memory the server takes (see pssBytes). */
export function treePssBytes(pid: number): number {
  return overTree(pid, pssBytes);
}

/** CPU time of a server with every worker process (those alive now), seconds. */
export function treeCpuSeconds(pid: number): number {
  return overTree(pid, cpuSeconds);
}

/** The most open file descriptors of any one process of a server (the per-process limit is what binds). */
export function maxTreeFdCount(pid: number): number {
  return Math.max(...processTree(pid).map(fdCount));
}

/** Open file descriptors of a process (-1 if it is gone). */
export function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** Busy and total CPU time of the whole machine so far (jiffies, from /proc/stat). */
export function machineCpu(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Share of the machine's CPU (all cores) that was busy between two machineCpu() readings, %. */
export function busyPercent(a: { busy: number; total: number }, b: { busy: number; total: number }): number {
  return Number(((100 * (b.busy - a.busy)) / Math.max(1, b.total - a.total)).toFixed(1));
}

/** CPU seconds of every process on the machine so far, by pid (with its command line). */
export function allProcessCpu(): Map<number, { cmd: string; seconds: number }> {
  const out = new Map<number, { cmd: string; seconds: number }>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim().slice(0, 100);
      out.set(pid, { cmd, seconds: cpuSeconds(pid) });
    } catch {
      // gone
    }
  }
  return out;
}

/** The processes that used the most CPU between two allProcessCpu() readings (cores used). */
export function topCpuUsers(
  before: Map<number, { cmd: string; seconds: number }>,
  after: Map<number, { cmd: string; seconds: number }>,
  seconds: number,
  n = 8,
): string[] {
  const rows: Array<[number, string]> = [];
  for (const [pid, a] of after) {
    const used = a.seconds - (before.get(pid)?.seconds ?? 0);
    if (used > 0) rows.push([used / seconds, `${pid} ${a.cmd}`]);
  }
  return rows
    .sort((x, y) => y[0] - x[0])
    .slice(0, n)
    .map(([c, what]) => `${c.toFixed(2)} cores  ${what}`);
}

/** CPU seconds so far of each thread of a process, by thread name (/proc/<pid>/task/<tid>/comm). */
export function threadCpu(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const seconds = (Number(fields[11]) + Number(fields[12])) / 100;
      out.set(comm, (out.get(comm) ?? 0) + seconds);
    } catch {
      // thread gone
    }
  }
  return out;
}
