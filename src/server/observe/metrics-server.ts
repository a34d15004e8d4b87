// The Prometheus endpoint of stats_config.address: GET /metrics in the text exposition format,
// 404 for any other path. Unlike Fleetspeak (which ignores bind errors silently), a port that
// cannot be bound fails startup with the address and the field to change.
import { createServer, type Server } from "node:http";
import type { Logger } from "../../common/log.js";
import { listen } from "../../common/listen.js";
import { formatHostPort, parseHostPort } from "../../common/net-address.js";
/** What the endpoint serves: one process's metrics, or every worker's summed. */
export interface MetricsSource {
  scrape(): Promise<string>;
  readonly contentType: string;
}

export interface MetricsServerOptions {
  /** "host:port" (stats_config.address); ":port" listens on every interface, port 0 picks one. */
  address: string;
  metrics: MetricsSource;
  logger: Logger;
}

export interface MetricsServer {
  /** The address actually bound, "host:port". */
  readonly address: string;
  close(): Promise<void>;
}

export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const { host } = parseHostPort(opts.address, { emptyHost: "" });
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end("not found; metrics are at /metrics\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("use GET\n");
      return;
    }
    opts.metrics.scrape().then(
      (text) => {
        res.writeHead(200, { "content-type": opts.metrics.contentType });
        res.end(req.method === "HEAD" ? undefined : text);
      },
      (e: unknown) => {
        opts.logger.error({ err: (e as Error).message }, "collecting metrics failed");
        res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
        res.end("collecting metrics failed\n");
      },
    );
  });
  server.keepAliveTimeout = 30_000;

  const bound = await listen(server, opts.address, "stats_config.address");
  server.on("error", (e) => opts.logger.error({ err: e.message }, "metrics listener error"));
  const address = formatHostPort(host === "" ? bound.address : host, bound.port);
  opts.logger.info({ address }, "serving Prometheus metrics at /metrics");

  let closing: Promise<void> | undefined;
  return {
    address,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
