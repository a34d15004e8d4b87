// Waiting for a condition in the Go fixture while real processes run: it polls (never sleeps a
// guessed time) and fails at once, with the process's last output, when one of the processes the
// wait depends on exits, so that a crashed Fleetspeak binary is named instead of timing out.
import type { ManagedProcess } from "./processes.js";

export interface PollOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Processes that must stay up while waiting. */
  watch?: ManagedProcess[];
}

/** Polls `check` until it returns a value other than undefined/false; returns that value. */
export async function pollUntil<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  opts: PollOptions = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let lastError: unknown;
  for (;;) {
    for (const p of opts.watch ?? []) {
      if (p.proc.exitCode !== null || p.proc.signalCode !== null) {
        throw new Error(
          `${p.name} exited (${p.proc.exitCode ?? p.proc.signalCode}) while waiting for ${what}; its output:\n${p.output().slice(-6000)}`,
        );
      }
    }
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const why = lastError ? ` (last error: ${(lastError as Error).message})` : "";
      throw new Error(`timed out after ${opts.timeoutMs ?? 20_000} ms waiting for ${what}${why}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}
