// WAL checkpoints of a SQLite file, moved off the event loop. With SQLite's default, the commit
// that takes the write-ahead log past 1,000 pages copies them into the database file (and syncs
// it) before it returns, inside whatever call made it: a stall of the server's only thread, and
// many of those pages are copied again at the next checkpoint. Here one thread of the process that
// owns the file (the single process, or the supervisor of the workers) runs a PASSIVE checkpoint
// every second on a connection of its own, which never blocks a writer or a reader; the serving
// connections keep an automatic checkpoint only as a backstop at BACKSTOP_PAGES, should the
// thread fall behind or die.
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { Logger } from "../../common/log.js";

/** wal_autocheckpoint (pages) of the serving connections while a checkpointer runs. */
export const BACKSTOP_PAGES = 10_000;

export interface CheckpointerOptions {
  path: string;
  intervalMs?: number;
  logger: Logger;
}

// CommonJS, run with eval: a worker thread that does not depend on where the compiled files are.
const THREAD = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.module);
const db = new Database(workerData.path);
db.pragma("busy_timeout = 1000");
let failing = false;
const checkpoint = () => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
    if (failing) parentPort.postMessage({ recovered: true });
    failing = false;
  } catch (e) {
    if (!failing) parentPort.postMessage({ error: String(e && e.message) });
    failing = true;
  }
};
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.on("message", () => {
  clearInterval(timer);
  checkpoint();
  db.close();
  parentPort.close();
});
`;

export class SqliteCheckpointer {
  readonly #worker: Worker;
  #stopped: Promise<void> | undefined;
  #exited = false;

  constructor(opts: CheckpointerOptions) {
    const module = createRequire(import.meta.url).resolve("better-sqlite3");
    this.#worker = new Worker(THREAD, { eval: true, workerData: { module, path: opts.path, intervalMs: opts.intervalMs ?? 1000 } });
    // It does not keep the process alive by itself; stop() holds it until the last checkpoint.
    this.#worker.unref();
    this.#worker.once("exit", () => {
      this.#exited = true;
    });
    this.#worker.on("message", (m: { error?: string; recovered?: boolean }) => {
      if (m.error) {
        opts.logger.warn(
          { file: opts.path, err: m.error },
          `WAL checkpoints of ${opts.path} failing (${m.error}); the serving connections checkpoint at ${BACKSTOP_PAGES} pages meanwhile`,
        );
      } else if (m.recovered) opts.logger.info({ file: opts.path }, "WAL checkpoints running again");
    });
    this.#worker.on("error", (e) =>
      opts.logger.warn({ file: opts.path, err: e.message }, `WAL checkpoint thread of ${opts.path} stopped: ${e.message}`),
    );
  }

  /** Runs a last checkpoint and ends the thread. */
  stop(): Promise<void> {
    this.#stopped ??= new Promise<void>((resolve) => {
      if (this.#exited) return resolve();
      // A last checkpoint waits at most its busy timeout (1 s) for a lock; past 5 s, end the thread.
      const timer = setTimeout(() => void this.#worker.terminate(), 5_000);
      this.#worker.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      this.#worker.ref();
      this.#worker.postMessage("stop");
    });
    return this.#stopped;
  }
}
