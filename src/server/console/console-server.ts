// The operator console's listener: server-rendered, read-only pages on their own address (the
// admin gRPC port speaks HTTP/2 only, which browsers do not use without TLS). HTTPS with the admin
// server's certificate when admin_config has one. Nobody gets a page with data without either a
// client certificate issued by admin_config.client_ca_certificates or a valid login token (a
// cookie set by /login, or an "Authorization: Bearer" header for scripts); everyone else gets 401
// and the sign-in page. Every answer carries a Content-Security-Policy that allows only our own
// script and styles, and nothing from the database reaches a page unescaped (html.ts).
import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import type { Logger } from "../../common/log.js";
import { formatHostPort, parseHostPort } from "../../common/net-address.js";
import { LogThrottle } from "../security/log-throttle.js";
import type { AdminTlsConfig } from "../security/admin-auth.js";
import { InvalidArgumentError } from "../store/errors.js";
import { type ConsoleData, LIST_LIMIT } from "./console-data.js";
import { html, type SafeHtml } from "./html.js";
import { verifyLoginToken } from "./login-token.js";
import { clientBody } from "./pages/client-page.js";
import { type FleetSearch, fleetBody } from "./pages/fleet-page.js";
import { page, type Section } from "./pages/layout.js";
import { loginBody } from "./pages/login-page.js";
import { serversBody } from "./pages/servers-page.js";
import { servicesBody } from "./pages/services-page.js";

export interface ConsoleServerOptions {
  /** host:port of admin_config.console.listen_address. */
  listenAddress: string;
  /** The admin server's TLS; with `ca` and requireClientCert, client certificates let browsers in. */
  tls?: AdminTlsConfig;
  /** console.login_secret: tokens signed with any of these are accepted. */
  loginSecrets: readonly string[];
  data: ConsoleData;
  logger: Logger;
}

export interface ConsoleServer {
  /** The address actually bound, host:port. */
  readonly address: string;
  /** "https://host:port" or "http://host:port". */
  readonly url: string;
  close(): Promise<void>;
}

export const SESSION_COOKIE = "fleetspeak_console";
const MAX_LOGIN_BODY_BYTES = 8 * 1024;
const MAX_SEARCH_CHARS = 128;

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

interface Asset {
  type: string;
  body: Buffer;
}

/** Our script and styles, and uPlot from its npm package; read once at start. */
function loadAssets(): Map<string, Asset> {
  const uplot = join(createRequire(import.meta.url).resolve("uplot"), "..");
  const own = join(import.meta.dirname, "assets");
  const js = "text/javascript; charset=utf-8";
  const css = "text/css; charset=utf-8";
  return new Map([
    ["/assets/console.js", { type: js, body: readFileSync(join(own, "console.js")) }],
    ["/assets/console.css", { type: css, body: readFileSync(join(own, "console.css")) }],
    ["/assets/uPlot.iife.min.js", { type: js, body: readFileSync(join(uplot, "uPlot.iife.min.js")) }],
    ["/assets/uPlot.min.css", { type: css, body: readFileSync(join(uplot, "uPlot.min.css")) }],
  ]);
}

type Who = { ok: true; user: string; viaToken: boolean } | { ok: false; reason?: string };

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function readBody(req: http.IncomingMessage, max: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.destroy();
        resolve(undefined);
      } else chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function startConsoleServer(opts: ConsoleServerOptions): Promise<ConsoleServer> {
  const assets = loadAssets();
  const certificates = opts.tls?.requireClientCert === true;
  const tokens = opts.loginSecrets.length > 0;
  if (!certificates && !tokens) {
    throw new Error(
      "console: no way to sign in; set admin_config.console.login_secret (tokens from fleetspeak-admin console-token) or admin_config.client_ca_certificates (client certificates)",
    );
  }
  const secure = opts.tls !== undefined;
  const refusedLog = new LogThrottle(60_000);

  const authenticate = (req: http.IncomingMessage): Who => {
    const socket = req.socket as TLSSocket;
    if (certificates && socket.authorized === true) {
      const subject = socket.getPeerX509Certificate?.()?.subject.replace(/\n/g, ", ") ?? "";
      return { ok: true, user: `certificate ${subject}`, viaToken: false };
    }
    const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
    const token = bearer ?? cookieValue(req.headers.cookie, SESSION_COOKIE);
    if (token === undefined || !tokens) return { ok: false };
    const check = verifyLoginToken(token, opts.loginSecrets);
    return check.ok ? { ok: true, user: check.token.user, viaToken: true } : { ok: false, reason: check.reason };
  };

  const send = (res: http.ServerResponse, status: number, body: SafeHtml, headers: http.OutgoingHttpHeaders = {}) => {
    res.writeHead(status, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store", ...headers });
    res.end(body.text);
  };

  const loginPage = (res: http.ServerResponse, status: number, error?: string, headers: http.OutgoingHttpHeaders = {}) =>
    send(
      res,
      status,
      page({
        title: "Sign in",
        section: "login",
        nowMs: Date.now(),
        body: loginBody({ tokens, certificates, ...(error ? { error } : {}) }),
      }),
      headers,
    );

  const login = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.method === "GET" || req.method === "HEAD") {
      loginPage(res, 200);
      return;
    }
    if (req.method !== "POST" || !tokens) throw new HttpError(405, "sign in with POST /login and a token");
    const body = await readBody(req, MAX_LOGIN_BODY_BYTES);
    const token = body === undefined ? "" : (new URLSearchParams(body).get("token") ?? "");
    const check = verifyLoginToken(token, opts.loginSecrets);
    if (!check.ok) {
      refusedLog.run((n) =>
        opts.logger.warn({ peer: req.socket.remoteAddress, suppressed: n }, `console sign-in refused: ${check.reason}`),
      );
      loginPage(res, 401, check.reason);
      return;
    }
    opts.logger.info({ user: check.token.user, peer: req.socket.remoteAddress }, "console sign-in");
    const maxAge = Math.max(0, Math.floor((check.token.expiresMs - Date.now()) / 1000));
    const cookie = `${SESSION_COOKIE}=${token.trim()}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${secure ? "; Secure" : ""}`;
    res.writeHead(303, { location: "/", "set-cookie": cookie, "cache-control": "no-store" });
    res.end();
  };

  const frame = async (title: string, section: Section, who: Who & { ok: true }, body: (now: number) => Promise<SafeHtml>) => {
    const nowMs = Date.now();
    return page({ title, section, user: who.user, canSignOut: who.viaToken, nowMs, body: await body(nowMs) });
  };

  const route = async (url: URL, who: Who & { ok: true }): Promise<SafeHtml> => {
    const path = url.pathname;
    if (path === "/") {
      const search = fleetSearch(url.searchParams);
      const query =
        search && !search.error
          ? search.by === "id"
            ? ({ by: "idPrefix", prefix: search.query, limit: LIST_LIMIT } as const)
            : ({
                by: "label",
                label: search.query,
                limit: LIST_LIMIT,
                ...(search.service ? { serviceName: search.service } : {}),
              } as const)
          : undefined;
      return frame("Fleet", "fleet", who, async (now) => fleetBody(await opts.data.fleet(query), search, now));
    }
    const client = /^\/clients\/([0-9a-f]{16})$/.exec(path);
    if (client) {
      const view = await opts.data.client(Buffer.from(client[1]!, "hex"));
      if (!view) throw new HttpError(404, `no client with ID ${client[1]} is known to this deployment`);
      return frame(`Client ${client[1]}`, "fleet", who, async (now) => clientBody(view, now));
    }
    if (path === "/servers") {
      return frame("Servers", "servers", who, async (now) => serversBody(await opts.data.servers(), now));
    }
    if (path === "/services") {
      return frame("Services & queues", "services", who, async (now) => servicesBody(await opts.data.services(), now));
    }
    throw new HttpError(404, `there is no page ${path}`);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    res.setHeader("content-security-policy", CSP);
    res.setHeader("x-content-type-options", "nosniff");
    res.setHeader("x-frame-options", "DENY");
    res.setHeader("referrer-policy", "no-referrer");
    const url = new URL(req.url ?? "/", "http://console.invalid");
    const asset = assets.get(url.pathname);
    if (asset) {
      // Code and styles only, no data: served to anyone (the sign-in page uses them).
      res.writeHead(200, { "content-type": asset.type, "cache-control": "max-age=3600" });
      res.end(asset.body);
      return;
    }
    if (url.pathname === "/login") {
      await login(req, res);
      return;
    }
    if (url.pathname === "/logout" && req.method === "POST") {
      res.writeHead(303, { location: "/login", "set-cookie": `${SESSION_COOKIE}=; Path=/; Max-Age=0`, "cache-control": "no-store" });
      res.end();
      return;
    }
    const who = authenticate(req);
    if (!who.ok) {
      if (tokens) {
        loginPage(res, 401, who.reason, who.reason ? { "set-cookie": `${SESSION_COOKIE}=; Path=/; Max-Age=0` } : {});
      } else {
        send(res, 403, page({ title: "Sign in", section: "login", nowMs: Date.now(), body: loginBody({ tokens, certificates }) }));
      }
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") throw new HttpError(405, "the console is read-only");
    send(res, 200, await route(url, who));
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    handle(req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : e instanceof InvalidArgumentError ? 400 : 503;
      const message =
        status === 503
          ? `the datastore could not be read: ${(e as Error).message}`
          : (e as Error).message;
      if (status === 503) opts.logger.warn({ err: (e as Error).message, path: req.url }, "console page failed");
      if (res.headersSent) {
        res.destroy();
        return;
      }
      send(res, status, page({ title: status === 404 ? "Not found" : "Cannot show this page", section: "fleet", nowMs: Date.now(), body: html`<p class="error">${message}</p><p><a href="/">Back to the fleet</a></p>` }));
    });
  };

  const server = opts.tls
    ? https.createServer(
        {
          cert: opts.tls.cert,
          key: opts.tls.key,
          ...(certificates && opts.tls.ca ? { ca: opts.tls.ca, requestCert: true } : {}),
          // A browser without a certificate may still sign in with a token; checked per request.
          rejectUnauthorized: false,
          minVersion: "TLSv1.2",
        },
        onRequest,
      )
    : http.createServer(onRequest);
  server.headersTimeout = 20_000;
  server.requestTimeout = 30_000;

  const { host, port } = parseHostPort(opts.listenAddress, { emptyHost: "" });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(new Error(`console: cannot listen on ${opts.listenAddress}: ${err.message}`));
    server.once("error", onError);
    server.listen({ host: host === "" ? undefined : host, port }, () => {
      server.off("error", onError);
      resolve();
    });
  });
  server.on("error", (err) => opts.logger.error({ err: err.message }, "console listener error"));
  const bound = server.address() as AddressInfo;
  const address = formatHostPort(host === "" ? bound.address : host, bound.port);
  const url = `${secure ? "https" : "http"}://${address}`;
  opts.logger.info({ url, tokens, certificates }, "operator console listening");
  return {
    address,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The fleet page's search, from ?by=id|label&q=…[&service=…]; undefined when nothing is asked. */
function fleetSearch(params: URLSearchParams): FleetSearch | undefined {
  const query = (params.get("q") ?? "").trim();
  if (query === "") return undefined;
  const by = params.get("by") === "label" ? "label" : "id";
  const service = params.get("service") ?? undefined;
  const search: FleetSearch = { by, query: query.slice(0, MAX_SEARCH_CHARS), ...(service ? { service } : {}) };
  if (query.length > MAX_SEARCH_CHARS) search.error = `search for at most ${MAX_SEARCH_CHARS} characters`;
  else if (by === "id" && !/^[0-9a-fA-F]{1,16}$/.test(query)) {
    search.error = "a client ID prefix is 1 to 16 hex digits (0-9, a-f)";
  }
  return search;
}
