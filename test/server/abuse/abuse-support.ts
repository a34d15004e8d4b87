// Shared by the abuse tests: a live server with small limits, attackers on loopback sockets, a
// well-behaved client (the spec-written RawClient) that must keep being served meanwhile, and a
// measure of what the server holds in memory.
import assert from "node:assert/strict";
import { once } from "node:events";
import * as net from "node:net";
import * as tls from "node:tls";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { FrontendListenerLimits } from "../../../src/server/frontend/listener.js";
import { outMessage, RawClient } from "../../support/raw-client.js";
import { startTestServer, type TestServer } from "../../support/server.js";
import { makeClientIdentity, type TestClientIdentity } from "../../support/tls.js";

export async function startAbuseServer(limits: Partial<FrontendListenerLimits>): Promise<TestServer> {
  return startTestServer({ overrides: { frontendLimits: limits } });
}

/** Polls with a fresh connection every `everyMs` while `during` runs; every poll must succeed. */
export async function servedThroughout<T>(ts: TestServer, during: Promise<T>, everyMs = 100): Promise<{ polls: number; result: T }> {
  const client = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
  let done = false;
  let polls = 0;
  const loop = (async () => {
    while (!done) {
      const r = await client.poll({ messages: [outMessage("TestService", "Fine")] });
      assert.equal(r.status, 200, `a well-behaved poll failed during the abuse: ${r.status} ${r.text}`);
      polls++;
      await new Promise((res) => setTimeout(res, everyMs));
    }
  })();
  try {
    const result = await during;
    done = true;
    await loop;
    assert.ok(polls > 0, "no poll completed during the abuse");
    return { polls, result };
  } finally {
    done = true;
    await loop.catch(() => {});
  }
}

/** A plain TCP connection to the frontend; resolves once connected. */
export async function tcp(ts: TestServer): Promise<net.Socket> {
  const s = net.connect(ts.port, "127.0.0.1");
  s.on("error", () => {});
  // Reads (and drops) what the server sends, so that its closing is seen.
  s.resume();
  await once(s, "connect");
  return s;
}

/** A TLS connection as a Fleetspeak client makes it (client certificate presented). */
export async function tlsConnection(ts: TestServer, identity: TestClientIdentity = makeClientIdentity()): Promise<tls.TLSSocket> {
  const s = tls.connect({
    host: "127.0.0.1",
    port: ts.port,
    ca: ts.caPem,
    servername: "localhost",
    cert: identity.certPem,
    key: identity.keyPem,
  });
  s.on("error", () => {});
  s.resume();
  await once(s, "secureConnect");
  return s;
}

/** Whether the socket was closed (by the server) within `ms`. */
export async function closedWithin(s: net.Socket, ms: number): Promise<boolean> {
  if (s.destroyed || s.closed) return true;
  // A paused socket never sees the server's FIN; read (and drop) whatever comes.
  s.resume();
  const timer = new Promise<false>((res) => setTimeout(() => res(false), ms).unref());
  return Promise.race([once(s, "close").then(() => true), timer]);
}

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Bytes of heap and Buffer memory in use after a full collection. */
export function memoryInUse(): number {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

export const MiB = 1024 * 1024;
