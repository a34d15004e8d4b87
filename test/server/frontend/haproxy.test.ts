// The frontend behind a real HAProxy in TCP mode: the address a handler sees is the one HAProxy
// saw (the client's own source port), with send-proxy (v1) and send-proxy-v2, and HAProxy's
// health checks (LOCAL headers under v2) raise no warnings.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { identifyClient } from "../../../src/server/frontend/client-identity.js";
import { clientAddressOf, type FrontendListener, startFrontendListener } from "../../../src/server/frontend/listener.js";
import { type RunningHaproxy, startHaproxy } from "../../support/haproxy.js";
import { makeClientIdentity, testServerPki } from "../../support/tls.js";
import { type CapturedLog, captureLog, request } from "./helpers.js";

describe("frontend listener behind HAProxy", () => {
  let listener: FrontendListener;
  let haproxy: RunningHaproxy;
  let log: CapturedLog;

  before(async () => {
    log = captureLog();
    const pki = testServerPki();
    listener = await startFrontendListener({
      listenAddress: "127.0.0.1:0",
      tls: { cert: pki.certChainPem, key: pki.keyPem },
      proxyProtocol: true,
      logger: log.logger,
      handler: (req, res) => {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ address: clientAddressOf(req), spki: identifyClient(req, undefined).spki.toString("hex") }));
      },
    });
    haproxy = await startHaproxy(listener.address, [
      { name: "v1", proxyVersion: 1 },
      { name: "v2", proxyVersion: 2, checkIntervalMs: 200 },
    ]);
  });

  after(async () => {
    await haproxy?.stop();
    await listener?.close();
  });

  for (const name of ["v1", "v2"]) {
    it(`sees the client's own address through send-proxy${name === "v2" ? "-v2" : ""}`, async () => {
      const id = makeClientIdentity();
      for (let i = 0; i < 3; i++) {
        const res = await request({ port: haproxy.port(name), cert: id.certPem, key: id.keyPem, path: "/message" });
        assert.equal(res.status, 200);
        const body = JSON.parse(res.body);
        assert.equal(body.address, `127.0.0.1:${res.localPort}`);
        assert.equal(body.spki, id.spki.toString("hex"));
      }
    });
  }

  it("accepts HAProxy's health checks without warnings", async () => {
    // Ten checks or so (every 200 ms). HAProxy 2.6 hangs up a check as soon as it connects, and
    // whether it wrote its PROXY LOCAL header by then is a race: some checks show up as one debug
    // line, most leave no trace. Neither kind may warn. (A LOCAL header written in full is tested
    // deterministically in listener.test.ts.)
    await new Promise((r) => setTimeout(r, 2000));
    assert.deepEqual(
      log.find("warn", /./).map((e) => e.msg),
      [],
    );
    const debug = log.find("debug", /./).map((e) => e.msg);
    for (const line of debug) assert.match(line, /^PROXY LOCAL header from 127\.0\.0\.1:\d+ \(load balancer health check\)$/);
  });
});
