// Structured logs (pino, JSON lines on stderr like Fleetspeak's glog). The level comes from
// FLEETSPEAK_LOG_LEVEL (trace, debug, info, warn, error, silent); default info.
import { pino, type Logger } from "pino";

export type { Logger };

let root: Logger | undefined;

function rootLogger(): Logger {
  if (!root) {
    root = pino(
      {
        level: process.env.FLEETSPEAK_LOG_LEVEL ?? "info",
        base: { pid: process.pid },
        timestamp: pino.stdTimeFunctions.isoTime,
      },
      pino.destination({ fd: 2, sync: false }),
    );
  }
  return root;
}

export function createLogger(component: string): Logger {
  return rootLogger().child({ component });
}

export function setLogLevel(level: string): void {
  rootLogger().level = level;
}

/** Flushes buffered log lines; call before process.exit. */
export function flushLogs(): void {
  root?.flush();
}
