// Structured logs (pino, JSON lines on stderr like Fleetspeak's glog). The level comes from
// FLEETSPEAK_LOG_LEVEL (trace, debug, info, warn, error, silent); default info.
// The client's bundles use log-lite.ts instead, which writes the same lines without pino; its test
// holds the two to the same output.
import { type DestinationStream, pino, type Logger } from "pino";

export type { Logger };

let root: Logger | undefined;

/** A root logger writing to `stream`: log.ts's options (tests compare log-lite.ts's lines to these). */
export function pinoRootLogger(stream: DestinationStream, level: string): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, stream);
}

function rootLogger(): Logger {
  root ??= pinoRootLogger(pino.destination({ fd: 2, sync: false }), process.env.FLEETSPEAK_LOG_LEVEL ?? "info");
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
