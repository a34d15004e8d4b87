import assert from "node:assert/strict";
import type { IncomingMessage, ServerResponse } from "node:http";
import * as tls from "node:tls";
import { after, before, describe, it } from "node:test";
import { IdentityError, identifyClient } from "../../../src/server/frontend/client-identity.js";
import {
  clientAddressOf,
  type FrontendListenerOptions,
  startFrontendListener,
} from "../../../src/server/frontend/listener.js";
import { makeClientIdentity, testServerPki } from "../../support/tls.js";
import { captureLog, closed, connectRaw, portOf, proxyV1, proxyV2, request } from "./helpers.js";

/** Answers with what the server learned about the caller. */
function echoHandler(req: IncomingMessage, res: ServerResponse): void {
  let spki: string | undefined;
  let identityError: string | undefined;
  try {
    spki = identifyClient(req, undefined).spki.toString("hex");
  } catch (e) {
    if (!(e instanceof IdentityError)) throw e;
    identityError = e.message;
  }
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ address: clientAddressOf(req), spki, identityError }));
}

async function start(overrides: Partial<FrontendListenerOptions> = {}) {
  const log = captureLog();
  const pki = testServerPki();
  const listener = await startFrontendListener({
    listenAddress: "127.0.0.1:0",
    tls: { cert: pki.certChainPem, key: pki.keyPem },
    proxyProtocol: false,
    handler: echoHandler,
    logger: log.logger,
    ...overrides,
  });
  return { listener, log, port: portOf(listener.address) };
}

describe("frontend listener, TLS without PROXY protocol", () => {
  let ctx: Awaited<ReturnType<typeof start>>;
  before(async () => {
    ctx = await start({ limits: { firstByteTimeoutMs: 300, tlsHandshakeTimeoutMs: 300, headersTimeoutMs: 300 } });
  });
  after(() => ctx.listener.close());

  it("reports the address it bound", () => {
    assert.match(ctx.listener.address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(ctx.port, 0);
  });

  it("gives handlers the client's address and the SPKI of its certificate", async () => {
    const id = makeClientIdentity();
    const res = await request({ port: ctx.port, cert: id.certPem, key: id.keyPem, path: "/message" });
    assert.equal(res.status, 200);
    const body = JSON.parse(res.body);
    assert.equal(body.address, `127.0.0.1:${res.localPort}`);
    assert.equal(body.spki, id.spki.toString("hex"));
  });

  it("serves a client without a certificate, whose identification then fails", async () => {
    const res = await request({ port: ctx.port });
    assert.equal(JSON.parse(res.body).identityError, "expected 1 client cert, received 0");
  });

  it("speaks HTTP/1.1 to clients that prefer h2, as Go clients with prefer_http2 fall back", async () => {
    const res = await request({ port: ctx.port, ALPNProtocols: ["h2", "http/1.1"] });
    assert.equal(res.status, 200);
    assert.equal(res.alpnProtocol, "http/1.1");
  });

  it("refuses TLS 1.1 and TLS 1.2 suites outside Fleetspeak's list, with a warning", async () => {
    await assert.rejects(request({ port: ctx.port, maxVersion: "TLSv1.1" }));
    await assert.rejects(request({ port: ctx.port, maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-SHA256" }));
    await ctx.log.waitFor("warn", /TLS handshake with 127\.0\.0\.1:\d+ failed/);
    const ok = await request({ port: ctx.port, maxVersion: "TLSv1.2", ciphers: "ECDHE-ECDSA-AES128-GCM-SHA256" });
    assert.equal(ok.status, 200);
  });

  it("issues no session tickets and resumes no sessions", async () => {
    for (const maxVersion of ["TLSv1.2", "TLSv1.3"] as const) {
      let session: Buffer | undefined;
      for (const attempt of [1, 2]) {
        const socket = tls.connect({ host: "127.0.0.1", port: ctx.port, rejectUnauthorized: false, maxVersion, session });
        socket.on("session", (s) => (session = s));
        await new Promise<void>((resolve, reject) => {
          socket.once("secureConnect", () => resolve());
          socket.once("error", reject);
        });
        assert.equal(socket.getTLSTicket(), undefined, `${maxVersion} ticket`);
        assert.equal(socket.isSessionReused(), false, `${maxVersion} attempt ${attempt} resumed a session`);
        socket.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        socket.resume();
        await closed(socket);
      }
    }
  });

  it("refuses a connection that starts with a PROXY header, naming the option", async () => {
    for (const header of [proxyV1("192.0.2.1", 1234), proxyV2([192, 0, 2, 1], 1234)]) {
      const socket = await connectRaw(ctx.port);
      socket.write(header);
      await closed(socket);
    }
    await ctx.log.waitFor("warn", /starts with a PROXY protocol header, but proxy_protocol is not enabled/);
    assert.equal(ctx.log.find("warn", /proxy_protocol is not enabled/).length, 2);
  });

  it("closes a connection that sends nothing after the idle timeout", async () => {
    const socket = await connectRaw(ctx.port);
    const { localPort } = socket;
    const t0 = Date.now();
    await closed(socket);
    assert.ok(Date.now() - t0 >= 250);
    await ctx.log.waitFor("debug", new RegExp(`127\\.0\\.0\\.1:${localPort}: nothing received within 300 ms`));
  });

  it("closes a stalled TLS handshake after the handshake timeout", async () => {
    const socket = await connectRaw(ctx.port);
    socket.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff]));
    await closed(socket);
    await ctx.log.waitFor("debug", /TLS handshake with .* did not complete/);
  });

  it("closes a TLS connection that sends no request within the headers timeout", async () => {
    const socket = tls.connect({ host: "127.0.0.1", port: ctx.port, rejectUnauthorized: false });
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    let answer = "";
    socket.on("data", (d) => (answer += d));
    await closed(socket);
    assert.match(answer, /^HTTP\/1\.1 408/);
  });

  it("answers garbage after the handshake with 400 and a warning", async () => {
    const socket = tls.connect({ host: "127.0.0.1", port: ctx.port, rejectUnauthorized: false });
    await new Promise<void>((resolve) => socket.once("secureConnect", () => resolve()));
    let answer = "";
    socket.on("data", (d) => (answer += d));
    socket.write("\x00\x01garbage\r\n\r\n");
    await closed(socket);
    assert.match(answer, /^HTTP\/1\.1 400/);
    await ctx.log.waitFor("warn", /malformed HTTP request from 127\.0\.0\.1/);
  });

  it("logs each failed connection once, with its address", async () => {
    const plain = await connectRaw(ctx.port);
    const plainPort = plain.localPort;
    plain.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await closed(plain);
    const reset = await connectRaw(ctx.port);
    const resetPort = reset.localPort;
    reset.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01]));
    await new Promise((r) => setTimeout(r, 50));
    reset.resetAndDestroy();
    await ctx.log.waitFor("warn", new RegExp(`TLS handshake with 127\\.0\\.0\\.1:${plainPort} failed: http request`));
    await ctx.log.waitFor("debug", new RegExp(`127\\.0\\.0\\.1:${resetPort}`));
    await new Promise((r) => setTimeout(r, 100));
    for (const port of [plainPort, resetPort]) {
      assert.equal(ctx.log.find("debug", new RegExp(`127\\.0\\.0\\.1:${port}\\b`)).length, 1, `log lines for port ${port}`);
    }
  });

  it("counts open connections", async () => {
    const before = ctx.listener.connectionCount();
    const socket = await connectRaw(ctx.port);
    const deadline = Date.now() + 2000;
    while (ctx.listener.connectionCount() === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.equal(ctx.listener.connectionCount(), before + 1);
    socket.destroy();
  });
});

describe("frontend listener, TLS with PROXY protocol", () => {
  let ctx: Awaited<ReturnType<typeof start>>;
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  before(async () => {
    ctx = await start({
      proxyProtocol: true,
      limits: { proxyHeaderTimeoutMs: 300 },
      handler: async (req, res) => {
        if (req.url === "/hold") await held;
        echoHandler(req, res);
      },
    });
  });
  after(() => ctx.listener.close());

  it("takes the client address from a v1 header sent in the same write as the ClientHello", async () => {
    const id = makeClientIdentity();
    const res = await request({ port: ctx.port, prefix: proxyV1("203.0.113.7", 4242), cert: id.certPem, key: id.keyPem });
    const body = JSON.parse(res.body);
    assert.equal(body.address, "203.0.113.7:4242");
    assert.equal(body.spki, id.spki.toString("hex"));
  });

  it("takes the client address from a v2 header", async () => {
    const res = await request({ port: ctx.port, prefix: proxyV2([198, 51, 100, 9], 65000) });
    assert.equal(JSON.parse(res.body).address, "198.51.100.9:65000");
  });

  it("serves a LOCAL (health check) connection as coming from its TCP peer, quietly", async () => {
    const res = await request({ port: ctx.port, prefix: proxyV2([0, 0, 0, 0], 0, true) });
    assert.equal(JSON.parse(res.body).address, `127.0.0.1:${res.localPort}`);
    assert.equal(ctx.log.find("warn", /./).filter((e) => /LOCAL/.test(e.msg)).length, 0);
  });

  it("closes a connection without a header, logs why, and leaves the others alone", async () => {
    const heldResponse = request({ port: ctx.port, prefix: proxyV1("203.0.113.8", 1111), path: "/hold" });
    // Wait until the held request is inside the handler.
    const deadline = Date.now() + 5000;
    while (ctx.listener.connectionCount() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));

    await assert.rejects(request({ port: ctx.port }));
    await ctx.log.waitFor("warn", /invalid PROXY protocol header \(proxy_protocol is enabled.*0x16/);
    const garbage = await connectRaw(ctx.port);
    garbage.write("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n");
    await closed(garbage);
    await ctx.log.waitFor("warn", /invalid port "99999"/);

    const other = await request({ port: ctx.port, prefix: proxyV1("203.0.113.9", 2222) });
    assert.equal(JSON.parse(other.body).address, "203.0.113.9:2222");
    release();
    assert.equal(JSON.parse((await heldResponse).body).address, "203.0.113.8:1111");
  });

  it("closes a connection whose header does not complete in time", async () => {
    const socket = await connectRaw(ctx.port);
    socket.write("PROXY TCP4 1.2.3.4");
    await closed(socket);
    await ctx.log.waitFor("warn", /no complete PROXY protocol header within 300 ms/);
  });

  it("logs a header cut short by the peer", async () => {
    const socket = await connectRaw(ctx.port);
    socket.end("PROXY TCP4 1.2.3.4 ");
    await closed(socket);
    await ctx.log.waitFor("warn", /after 19 bytes of an incomplete PROXY protocol header/);
  });
});

describe("frontend listener, cleartext", () => {
  it("serves plain HTTP and takes the address from a PROXY header in the same write as the request", async () => {
    const ctx = await start({ tls: undefined, proxyProtocol: true });
    try {
      const res = await request({ port: ctx.port, tls: false, prefix: proxyV1("192.0.2.44", 3333), path: "/message" });
      assert.equal(JSON.parse(res.body).address, "192.0.2.44:3333");
      assert.equal(JSON.parse(res.body).identityError, "TLS information not found");
    } finally {
      await ctx.listener.close();
    }
  });

  it("serves plain HTTP from the TCP peer, and refuses PROXY headers without the option", async () => {
    const ctx = await start({ tls: undefined });
    try {
      const res = await request({ port: ctx.port, tls: false, method: "POST", path: "/message", body: "x" });
      assert.equal(JSON.parse(res.body).address, `127.0.0.1:${res.localPort}`);
      await assert.rejects(request({ port: ctx.port, tls: false, prefix: proxyV1("192.0.2.44", 3333) }));
      await ctx.log.waitFor("warn", /proxy_protocol is not enabled/);
    } finally {
      await ctx.listener.close();
    }
  });
});

describe("frontend listener on every interface", () => {
  it("listens dual-stack for \":port\" and reports IPv4 peers as plain IPv4, IPv6 peers in brackets", async () => {
    const ctx = await start({ listenAddress: ":0" });
    try {
      assert.match(ctx.listener.address, /^\[::\]:\d+$/);
      const v4 = await request({ port: ctx.port, host: "127.0.0.1" });
      assert.equal(JSON.parse(v4.body).address, `127.0.0.1:${v4.localPort}`);
      const v6 = await request({ port: ctx.port, host: "::1" });
      assert.equal(JSON.parse(v6.body).address, `[::1]:${v6.localPort}`);
    } finally {
      await ctx.listener.close();
    }
  });
});

describe("frontend listener robustness", () => {
  it("answers 500 when a handler throws or rejects, and keeps serving", async () => {
    const ctx = await start({
      handler: (req) => {
        if (req.url === "/sync") throw new Error("boom");
        return Promise.reject(new Error("async boom"));
      },
    });
    try {
      assert.equal((await request({ port: ctx.port, path: "/sync" })).status, 500);
      assert.equal((await request({ port: ctx.port, path: "/async" })).status, 500);
      assert.equal(ctx.log.find("error", /request handler failed/).length, 2);
    } finally {
      await ctx.listener.close();
    }
  });

  it("names the config fields when the certificate or key is unusable", async () => {
    const pki = testServerPki();
    await assert.rejects(
      startFrontendListener({
        listenAddress: "127.0.0.1:0",
        tls: { cert: "not a cert", key: pki.keyPem },
        proxyProtocol: false,
        handler: echoHandler,
        logger: captureLog().logger,
      }),
      /https_config\.certificates \/ https_config\.key/,
    );
  });

  it("names the listen address when it cannot listen", async () => {
    const ctx = await start();
    try {
      await assert.rejects(start({ listenAddress: ctx.listener.address }), /https_config\.listen_address "127\.0\.0\.1:\d+": cannot listen: the address is in use/);
    } finally {
      await ctx.listener.close();
    }
  });

  it("close() cuts connections in every phase and running requests after the grace period", async () => {
    let entered: () => void = () => {};
    const inHandler = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const ctx = await start({
      limits: { closeGraceMs: 200 },
      handler: (_req, res) => {
        res.writeHead(200);
        res.flushHeaders();
        entered();
      },
    });
    const idle = await connectRaw(ctx.port);
    const streaming = request({ port: ctx.port, path: "/streaming-message" }).then(
      () => "completed",
      (e: Error) => e.message,
    );
    await inHandler;
    const t0 = Date.now();
    await ctx.listener.close();
    assert.ok(Date.now() - t0 >= 150);
    await closed(idle);
    assert.equal(await streaming, "aborted");
    assert.equal(ctx.listener.connectionCount(), 0);
  });
});
