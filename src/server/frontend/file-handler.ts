// GET /files/<service>/<name>: files an integrator stored for clients (e.g. the revoked
// certificate list), served like Go's http.ServeContent (Last-Modified, If-Modified-Since -> 304,
// a single Range -> 206, HEAD). The client escapes service and name once more than the URL needs,
// so each path segment is decoded twice.
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname } from "node:path";
import { CertHeaderError, pathUnescape } from "../../common/cert-header.js";
import { clientIdFromSpki } from "../../common/ids.js";
import type { Logger } from "../../common/log.js";
import type { FrontendConfig } from "../../gen/fleetspeak_components/config_pb.js";
import { IdentityError, identifyClient } from "./client-identity.js";
import { clientAddressOf } from "./listener.js";

export interface ServedFile {
  data: Uint8Array;
  /** Milliseconds since the epoch; 0 when unknown (then no Last-Modified, no 304). */
  modifiedMs: number;
}

/** What the authorizer is told about a file request (Fleetspeak's Allow1/Allow2 inputs). */
export interface FileRequester {
  address: string;
  clientId: Buffer;
  labels: string[];
}

export interface FileRequestOptions {
  readFile: (service: string, name: string) => Promise<ServedFile | undefined>;
  /** HttpsConfig.enable_file_server_authorization: only identified clients may fetch files. */
  authorize: boolean;
  frontendConfig: FrontendConfig | undefined;
  logger: Logger;
  /** With `authorize`: a further check of the identified client (address, ID, labels). */
  allow?: (requester: FileRequester) => boolean | Promise<boolean>;
}

const CONTENT_TYPES: Record<string, string> = {
  ".css": "text/css; charset=utf-8",
  ".gif": "image/gif",
  ".htm": "text/html; charset=utf-8",
  ".html": "text/html; charset=utf-8",
  ".jpeg": "image/jpeg",
  ".jpg": "image/jpeg",
  ".js": "text/javascript; charset=utf-8",
  ".json": "application/json",
  ".pdf": "application/pdf",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".txt": "text/plain; charset=utf-8",
  ".xml": "text/xml; charset=utf-8",
  ".zip": "application/zip",
  ".gz": "application/gzip",
  ".tar": "application/x-tar",
  ".deb": "application/vnd.debian.binary-package",
  ".rpm": "application/x-rpm",
  ".msi": "application/x-msi",
  ".exe": "application/vnd.microsoft.portable-executable",
};

function contentTypeOf(name: string): string {
  return CONTENT_TYPES[extname(name).toLowerCase()] ?? "application/octet-stream";
}

/** Go's http.Error: plain text, newline-terminated. */
function sendError(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "x-content-type-options": "nosniff",
  });
  res.end(`${message}\n`);
}

// Refused file requests are logged at most once a minute, as Fleetspeak does: a flood of them
// must not flood the log.
let lastUnauthorizedLogMs = 0;

async function authorizationFailure(req: IncomingMessage, opts: FileRequestOptions): Promise<string | undefined> {
  const address = clientAddressOf(req);
  if (!/^(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):\d+$/.test(address)) return `address ${address} is not ip:port`;
  let spki: Buffer;
  try {
    spki = identifyClient(req, opts.frontendConfig).spki;
  } catch (e) {
    if (e instanceof IdentityError) return e.message;
    throw e;
  }
  if (opts.allow) {
    const requester = { address, clientId: clientIdFromSpki(spki), labels: req.headersDistinct["x-fleetspeak-labels"] ?? [] };
    if (!(await opts.allow(requester))) return `not allowed (client ${requester.clientId.toString("hex")} at ${address})`;
  }
  return undefined;
}

function parseFilePath(rawUrl: string): { service: string; name: string } | { error: string } {
  const rawPath = rawUrl.split("?")[0]!;
  let path: string;
  try {
    path = pathUnescape(rawPath).toString("latin1");
  } catch {
    return { error: `unable to parse files uri: ${rawPath}` };
  }
  const segments = path.replace(/^\//, "").split("/");
  if (segments.length !== 3 || segments[0] !== "files") return { error: `unable to parse files uri: ${path}` };
  const decoded: string[] = [];
  for (const segment of segments.slice(1)) {
    try {
      decoded.push(pathUnescape(segment).toString("utf8"));
    } catch (e) {
      if (!(e instanceof CertHeaderError)) throw e;
      return { error: `unable to parse path component [${segment}]: ${e.message}` };
    }
  }
  return { service: decoded[0]!, name: decoded[1]! };
}

type RangeResult = { start: number; end: number } | "unsatisfiable" | "ignore";

/** One "bytes=" range against a body of `size` bytes; several ranges are served as the whole. */
function parseRange(header: string, size: number): RangeResult {
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header);
  if (!m) return header.startsWith("bytes=") && header.includes(",") ? "ignore" : "unsatisfiable";
  const [, first = "", last = ""] = m;
  if (first === "") {
    if (last === "") return "unsatisfiable";
    const suffix = Math.min(Number(last), size);
    return suffix === 0 ? "unsatisfiable" : { start: size - suffix, end: size - 1 };
  }
  const start = Number(first);
  if (start >= size) return "unsatisfiable";
  const end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  return end < start ? "unsatisfiable" : { start, end };
}

export async function handleFileRequest(req: IncomingMessage, res: ServerResponse, opts: FileRequestOptions): Promise<void> {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    sendError(res, 405, "method not allowed");
    return;
  }
  if (opts.authorize) {
    const failure = await authorizationFailure(req, opts);
    if (failure !== undefined) {
      sendError(res, 401, "unauthorized");
      const now = Date.now();
      if (now - lastUnauthorizedLogMs >= 60_000) {
        lastUnauthorizedLogMs = now;
        opts.logger.warn({ client: clientAddressOf(req), url: req.url }, `unauthorized file request from ${clientAddressOf(req)}: ${failure}`);
      }
      return;
    }
  }
  const parsed = parseFilePath(req.url ?? "/");
  if ("error" in parsed) {
    sendError(res, 400, parsed.error);
    return;
  }
  let file: ServedFile | undefined;
  try {
    file = await opts.readFile(parsed.service, parsed.name);
  } catch (e) {
    opts.logger.error({ err: e, service: parsed.service, name: parsed.name }, "reading a file for a client failed");
    sendError(res, 500, `internal error: ${(e as Error).message}`);
    return;
  }
  if (!file) {
    sendError(res, 404, "file not found");
    return;
  }
  serveContent(req, res, parsed.name, file);
}

function serveContent(req: IncomingMessage, res: ServerResponse, name: string, file: ServedFile): void {
  const size = file.data.byteLength;
  // HTTP dates have whole seconds; compare at that precision, as Go does.
  const modifiedSeconds = Math.floor(file.modifiedMs / 1000);
  const lastModified = file.modifiedMs > 0 ? new Date(modifiedSeconds * 1000).toUTCString() : undefined;
  if (lastModified) res.setHeader("last-modified", lastModified);
  res.setHeader("accept-ranges", "bytes");

  const ifModifiedSince = req.headers["if-modified-since"];
  if (lastModified && ifModifiedSince && req.headers["if-none-match"] === undefined) {
    const since = Date.parse(ifModifiedSince);
    if (!Number.isNaN(since) && modifiedSeconds * 1000 <= since) {
      res.writeHead(304).end();
      return;
    }
  }

  let range: RangeResult = "ignore";
  const rangeHeader = req.headers.range;
  if (rangeHeader !== undefined) {
    const ifRange = req.headersDistinct["if-range"]?.[0];
    const ifRangeMatches = ifRange === undefined || (lastModified !== undefined && Date.parse(ifRange) === modifiedSeconds * 1000);
    if (ifRangeMatches) range = parseRange(rangeHeader, size);
  }
  if (range === "unsatisfiable") {
    res.setHeader("content-range", `bytes */${size}`);
    sendError(res, 416, "invalid range: failed to overlap");
    return;
  }
  const body = Buffer.from(file.data.buffer, file.data.byteOffset, size);
  res.setHeader("content-type", contentTypeOf(name));
  if (range === "ignore") {
    res.setHeader("content-length", size);
    res.writeHead(200);
    res.end(req.method === "HEAD" ? undefined : body);
    return;
  }
  res.setHeader("content-range", `bytes ${range.start}-${range.end}/${size}`);
  res.setHeader("content-length", range.end - range.start + 1);
  res.writeHead(206);
  res.end(req.method === "HEAD" ? undefined : body.subarray(range.start, range.end + 1));
}
