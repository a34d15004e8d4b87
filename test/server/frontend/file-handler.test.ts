import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { clientIdToHex } from "../../../src/common/ids.js";
import { type FileRequester, type FileRequestOptions, handleFileRequest, type ServedFile } from "../../../src/server/frontend/file-handler.js";
import { type FrontendListener, startFrontendListener } from "../../../src/server/frontend/listener.js";
import { makeClientIdentity, testServerPki } from "../../support/tls.js";
import { type CapturedLog, captureLog, portOf, request, type TestRequestOptions } from "./helpers.js";

const MODIFIED_MS = Date.UTC(2024, 0, 2, 3, 4, 5, 678);
const files = new Map<string, ServedFile>([
  ["system/RevokedCertificates", { data: Buffer.from("0123456789"), modifiedMs: MODIFIED_MS }],
  ["svc/notes.txt", { data: Buffer.from("hello\n"), modifiedMs: MODIFIED_MS }],
  ["svc/a/b", { data: Buffer.from("slash"), modifiedMs: MODIFIED_MS }],
  ["my svc/x y", { data: Buffer.from("spaces"), modifiedMs: 0 }],
]);
const reads: string[] = [];

async function readFile(service: string, name: string): Promise<ServedFile | undefined> {
  reads.push(`${service}/${name}`);
  if (service === "broken") throw new Error("database is down");
  return files.get(`${service}/${name}`);
}

async function startFileServer(options: Partial<FileRequestOptions>, tls: boolean) {
  const log = captureLog();
  const pki = testServerPki();
  const listener = await startFrontendListener({
    listenAddress: "127.0.0.1:0",
    ...(tls ? { tls: { cert: pki.certChainPem, key: pki.keyPem } } : {}),
    proxyProtocol: false,
    logger: log.logger,
    handler: (req, res) =>
      handleFileRequest(req, res, { readFile, authorize: false, frontendConfig: undefined, logger: log.logger, ...options }),
  });
  return { listener, log };
}

describe("file handler", () => {
  let listener: FrontendListener;
  let log: CapturedLog;
  before(async () => {
    ({ listener, log } = await startFileServer({}, false));
  });
  after(() => listener.close());
  const get = (path: string, opts: Partial<TestRequestOptions> = {}) =>
    request({ port: portOf(listener.address), tls: false, path, ...opts });

  it("serves a file with Last-Modified, Content-Type, Content-Length and Accept-Ranges", async () => {
    const res = await get("/files/system/RevokedCertificates");
    assert.equal(res.status, 200);
    assert.equal(res.body, "0123456789");
    assert.equal(res.headers["last-modified"], "Tue, 02 Jan 2024 03:04:05 GMT");
    assert.equal(res.headers["content-type"], "application/octet-stream");
    assert.equal(res.headers["content-length"], "10");
    assert.equal(res.headers["accept-ranges"], "bytes");
    assert.equal((await get("/files/svc/notes.txt")).headers["content-type"], "text/plain; charset=utf-8");
  });

  it("answers 304 when not modified since the client's copy", async () => {
    for (const since of ["Tue, 02 Jan 2024 03:04:05 GMT", "Wed, 03 Jan 2024 00:00:00 GMT"]) {
      const res = await get("/files/system/RevokedCertificates", { headers: { "if-modified-since": since } });
      assert.equal(res.status, 304, since);
      assert.equal(res.body, "");
      assert.equal(res.headers["last-modified"], "Tue, 02 Jan 2024 03:04:05 GMT");
    }
    for (const since of ["Tue, 02 Jan 2024 03:04:04 GMT", "not a date"]) {
      const res = await get("/files/system/RevokedCertificates", { headers: { "if-modified-since": since } });
      assert.equal(res.status, 200, since);
    }
  });

  it("ignores If-Modified-Since and sends no Last-Modified when the time is unknown", async () => {
    const res = await get("/files/my%2520svc/x%2520y", { headers: { "if-modified-since": "Wed, 03 Jan 2024 00:00:00 GMT" } });
    assert.equal(res.status, 200);
    assert.equal(res.body, "spaces");
    assert.equal(res.headers["last-modified"], undefined);
  });

  it("decodes service and name twice: a%252Fb is the name a/b", async () => {
    const res = await get("/files/svc/a%252Fb");
    assert.equal(res.status, 200);
    assert.equal(res.body, "slash");
    assert.equal(reads.at(-1), "svc/a/b");
  });

  it("answers 404 for a missing file and 500 when the store fails", async () => {
    const missing = await get("/files/svc/nothing");
    assert.deepEqual([missing.status, missing.body], [404, "file not found\n"]);
    const broken = await get("/files/broken/x");
    assert.deepEqual([broken.status, broken.body], [500, "internal error: database is down\n"]);
    assert.equal(log.find("error", /reading a file for a client failed/).length, 1);
  });

  it("answers 400 for paths that are not /files/<service>/<name>", async () => {
    const cases: Array<[string, string]> = [
      ["/files/svc", "unable to parse files uri: /files/svc"],
      ["/files/svc/a/b", "unable to parse files uri: /files/svc/a/b"],
      ["/files/svc/a%2Fb", "unable to parse files uri: /files/svc/a/b"],
      ["/other/svc/x", "unable to parse files uri: /other/svc/x"],
      ["/files/svc/%zz", "unable to parse files uri: /files/svc/%zz"],
      ["/files/svc/x%25zz", 'unable to parse path component [x%zz]: invalid URL escape "%zz"'],
    ];
    for (const [path, message] of cases) {
      const res = await get(path);
      assert.deepEqual([res.status, res.body], [400, `${message}\n`], path);
    }
  });

  it("serves a single byte range with 206", async () => {
    const cases: Array<[string, string, string]> = [
      ["bytes=2-5", "2345", "bytes 2-5/10"],
      ["bytes=7-", "789", "bytes 7-9/10"],
      ["bytes=-3", "789", "bytes 7-9/10"],
      ["bytes=8-100", "89", "bytes 8-9/10"],
      ["bytes=-100", "0123456789", "bytes 0-9/10"],
    ];
    for (const [range, body, contentRange] of cases) {
      const res = await get("/files/system/RevokedCertificates", { headers: { range } });
      assert.deepEqual([res.status, res.body, res.headers["content-range"]], [206, body, contentRange], range);
      assert.equal(res.headers["content-length"], String(body.length));
    }
  });

  it("answers 416 for unsatisfiable ranges and 200 for several or stale ones", async () => {
    for (const range of ["bytes=10-", "bytes=5-2", "bytes=-0", "items=0-1", "bytes=x"]) {
      const res = await get("/files/system/RevokedCertificates", { headers: { range } });
      assert.deepEqual([res.status, res.headers["content-range"]], [416, "bytes */10"], range);
    }
    const several = await get("/files/system/RevokedCertificates", { headers: { range: "bytes=0-1,4-5" } });
    assert.deepEqual([several.status, several.body], [200, "0123456789"]);
    const stale = await get("/files/system/RevokedCertificates", {
      headers: { range: "bytes=0-1", "if-range": "Mon, 01 Jan 2024 00:00:00 GMT" },
    });
    assert.deepEqual([stale.status, stale.body], [200, "0123456789"]);
    const fresh = await get("/files/system/RevokedCertificates", {
      headers: { range: "bytes=0-1", "if-range": "Tue, 02 Jan 2024 03:04:05 GMT" },
    });
    assert.deepEqual([fresh.status, fresh.body], [206, "01"]);
  });

  it("answers HEAD with the headers only, and refuses other methods", async () => {
    const head = await get("/files/system/RevokedCertificates", { method: "HEAD" });
    assert.deepEqual([head.status, head.body, head.headers["content-length"]], [200, "", "10"]);
    const post = await get("/files/system/RevokedCertificates", { method: "POST", body: "x" });
    assert.deepEqual([post.status, post.headers.allow], [405, "GET, HEAD"]);
  });
});

describe("file handler with enable_file_server_authorization", () => {
  let listener: FrontendListener;
  let log: CapturedLog;
  const seen: FileRequester[] = [];
  before(async () => {
    ({ listener, log } = await startFileServer(
      {
        authorize: true,
        allow: (requester) => {
          seen.push(requester);
          return !requester.labels.includes("blocked");
        },
      },
      true,
    ));
  });
  after(() => listener.close());
  const get = (opts: Partial<TestRequestOptions> = {}) =>
    request({ port: portOf(listener.address), path: "/files/system/RevokedCertificates", ...opts });

  it("answers 401 to a request without a client certificate, logging once a minute", async () => {
    for (let i = 0; i < 3; i++) {
      const res = await get();
      assert.deepEqual([res.status, res.body], [401, "unauthorized\n"]);
    }
    const warnings = log.find("warn", /unauthorized file request/);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!.msg, /from 127\.0\.0\.1:\d+: expected 1 client cert, received 0/);
  });

  it("serves an identified client and tells the authorizer its ID, address and labels", async () => {
    const id = makeClientIdentity();
    const res = await get({ cert: id.certPem, key: id.keyPem, headers: { "x-fleetspeak-labels": ["linux", "amd64"] } });
    assert.equal(res.status, 200);
    const last = seen.at(-1)!;
    assert.equal(clientIdToHex(last.clientId), id.clientId);
    assert.deepEqual(last.labels, ["linux", "amd64"]);
    assert.equal(last.address, `127.0.0.1:${res.localPort}`);
  });

  it("answers 401 when the authorizer refuses", async () => {
    const id = makeClientIdentity();
    const res = await get({ cert: id.certPem, key: id.keyPem, headers: { "x-fleetspeak-labels": "blocked" } });
    assert.equal(res.status, 401);
  });
});
