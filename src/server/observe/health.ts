// The health-check listener of health_check_config: plain HTTP, any method and path. Fleetspeak
// always answers 200 with an empty body; that stays the default. Given a readiness check (e.g. a
// database ping), a failing or hanging check answers 503 with the reason, so a load balancer
// stops sending clients to a server that cannot serve them.
import * as http from "node:http";
import type { Logger } from "../../common/log.js";
import { listen } from "../../common/listen.js";
import { formatHostPort } from "../../common/net-address.js";

export interface HealthCheckOptions {
  /** host:port of health_check_config.listen_address. */
  listenAddress: string;
  logger: Logger;
  /** Readiness: throws or rejects when the server cannot serve. Absent = always healthy. */
  ready?: () => unknown;
  /** A readiness check still running after this counts as failed (default 5 s). */
  readyTimeoutMs?: number;
}

export interface HealthCheck {
  /** The address actually bound, host:port. */
  address: string;
  close(): Promise<void>;
}

async function runWithTimeout(check: () => unknown, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`readiness check did not answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([Promise.resolve().then(check), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export async function startHealthCheck(opts: HealthCheckOptions): Promise<HealthCheck> {
  const timeoutMs = opts.readyTimeoutMs ?? 5000;
  // Logged when the answer changes, not on every probe (load balancers probe every second or so).
  let lastFailure: string | undefined;

  const server = http.createServer((req, res) => {
    req.resume();
    const ready = opts.ready;
    if (!ready) {
      res.writeHead(200).end();
      return;
    }
    runWithTimeout(ready, timeoutMs).then(
      () => {
        if (lastFailure !== undefined) opts.logger.info("readiness check passes again");
        lastFailure = undefined;
        res.writeHead(200).end();
      },
      (err: unknown) => {
        const reason = err instanceof Error ? err.message : String(err);
        if (lastFailure !== reason) opts.logger.warn({ reason }, `readiness check failed, answering 503: ${reason}`);
        lastFailure = reason;
        res.writeHead(503, { "content-type": "text/plain; charset=utf-8" }).end(`${reason}\n`);
      },
    );
  });
  server.on("clientError", (_err, socket) => socket.destroy());

  const bound = await listen(server, opts.listenAddress, "health_check_config.listen_address");
  return {
    address: formatHostPort(bound.address, bound.port),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
