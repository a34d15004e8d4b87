// Abuse of the frontend's connections, each against a live server with small limits while a
// well-behaved client keeps polling: connections that never send, slowloris request headers,
// TLS handshakes that stall or never end, and more connections than the server allows.
import assert from "node:assert/strict";
import type * as net from "node:net";
import * as tls from "node:tls";
import { after, before, describe, it } from "node:test";
import { outMessage, RawClient, type RawStream } from "../../support/raw-client.js";
import type { TestServer } from "../../support/server.js";
import { closedWithin, servedThroughout, startAbuseServer, tcp, tlsConnection } from "./abuse-support.js";

describe("abuse: connections", { timeout: 60_000 }, () => {
  let ts: TestServer;
  const sockets: net.Socket[] = [];

  before(async () => {
    ts = await startAbuseServer({
      maxConnections: 120,
      maxPendingConnections: 40,
      headersTimeoutMs: 1500,
      tlsHandshakeTimeoutMs: 1500,
      firstByteTimeoutMs: 1500,
    });
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await ts?.stop();
  });

  it("connections that never send: past max_pending_connections the oldest are closed, and clients are served", async () => {
    const { result: idle } = await servedThroughout(
      ts,
      (async () => {
        const opened: net.Socket[] = [];
        for (let i = 0; i < 150; i++) opened.push(await tcp(ts));
        sockets.push(...opened);
        return opened;
      })(),
    );
    // 150 opened, at most 40 may wait at once (and the polls took some room too).
    await new Promise((r) => setTimeout(r, 100));
    const stillOpen = idle.filter((s) => !s.destroyed && !s.closed).length;
    assert.ok(stillOpen <= 40, `${stillOpen} silent connections still open`);
    // The rest go when the first-byte timeout passes.
    const closed = await Promise.all(idle.map((s) => closedWithin(s, 3000)));
    assert.ok(closed.every(Boolean), "a silent connection outlived the first-byte timeout");
  });

  it("slowloris request headers: cut at the headers timeout, and crowded out by real clients meanwhile", async () => {
    const slow: tls.TLSSocket[] = [];
    const { polls } = await servedThroughout(
      ts,
      (async () => {
        for (let i = 0; i < 60; i++) {
          const s = await tlsConnection(ts);
          s.write("POST /message HTTP/1.1\r\nHost: localhost\r\n");
          slow.push(s);
        }
        sockets.push(...slow);
        // One more header line every 200 ms from each of them, for 2 s.
        for (let t = 0; t < 10; t++) {
          for (const s of slow) if (!s.destroyed) s.write(`X-Slow-${t}: ${"a".repeat(10)}\r\n`);
          await new Promise((r) => setTimeout(r, 200));
        }
      })(),
    );
    assert.ok(polls >= 5, `only ${polls} polls got through`);
    const closed = await Promise.all(slow.map((s) => closedWithin(s, 3000)));
    assert.ok(closed.every(Boolean), "a slowloris connection outlived the headers timeout");
  });

  it("stalled and endless TLS handshakes: clients are served, stalled ones are closed", async () => {
    // A ClientHello cut short, and then nothing.
    const stalled: net.Socket[] = [];
    const churn = async (until: number) => {
      let n = 0;
      while (Date.now() < until) {
        const s = tls.connect({ host: "127.0.0.1", port: ts.port, rejectUnauthorized: false });
        s.on("error", () => {});
        await new Promise<void>((resolve) => {
          s.once("secureConnect", () => resolve());
          s.once("close", () => resolve());
        });
        s.destroy();
        n++;
      }
      return n;
    };
    const { result } = await servedThroughout(
      ts,
      (async () => {
        for (let i = 0; i < 80; i++) {
          const s = await tcp(ts);
          s.write(Buffer.from("160301020001", "hex"));
          stalled.push(s);
        }
        sockets.push(...stalled);
        // Meanwhile four peers do full handshakes back to back and hang up, for 1.5 s.
        const until = Date.now() + 1500;
        return (await Promise.all([churn(until), churn(until), churn(until), churn(until)])).reduce((a, b) => a + b);
      })(),
    );
    assert.ok(result > 20, `only ${result} handshakes were made`);
    const closed = await Promise.all(stalled.map((s) => closedWithin(s, 3000)));
    assert.ok(closed.every(Boolean), "a stalled handshake outlived the handshake timeout");
  });

});

describe("abuse: the connection cap (max_connections)", { timeout: 30_000 }, () => {
  let ts: TestServer;
  const sockets: net.Socket[] = [];
  const streams: RawStream[] = [];

  before(async () => {
    ts = await startAbuseServer({ maxConnections: 30, maxPendingConnections: 1000, firstByteTimeoutMs: 10_000 });
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    for (const s of streams) s.close();
    await ts?.stop();
  });

  it("at the cap, connections that sent nothing make room for new ones; connections in use are kept", async () => {
    for (let i = 0; i < 10; i++) {
      const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
      streams.push(await c.stream({ AllowedMessages: { system: 100n, TestService: 100n } }));
    }
    const hogs: net.Socket[] = [];
    for (let i = 0; i < 40; i++) hogs.push(await tcp(ts));
    sockets.push(...hogs);
    await servedThroughout(ts, new Promise((r) => setTimeout(r, 500)));
    await new Promise((r) => setTimeout(r, 100));
    const hogsOpen = hogs.filter((s) => !s.destroyed && !s.closed).length;
    assert.ok(hogsOpen <= 20, `${hogsOpen} idle connections open beside 10 streams, with room for 30 connections`);
    // The streams were never the ones closed: each still acknowledges a frame.
    for (const s of streams) {
      s.send({ messages: [outMessage("TestService", "StillHere")] });
      assert.equal((await s.next())?.ackIndex, 1n);
    }
  });

  it("when every connection is in use, new ones are refused at accept", async () => {
    // 10 streams are open; fill the rest of the 30 with streams too.
    for (let i = 0; i < 20; i++) {
      const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
      streams.push(await c.stream({ AllowedMessages: { system: 100n, TestService: 100n } }));
    }
    const late = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
    await assert.rejects(late.poll({}), /ECONNRESET|socket hang up|disconnected/);
    streams.pop()?.close();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await late.poll({})).status, 200);
  });
});
