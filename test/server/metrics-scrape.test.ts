// A running server's /metrics shows its connected streaming clients and the traffic, with
// Fleetspeak's metric names.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { outMessage, RawClient } from "../support/raw-client.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { testServerPki } from "../support/tls.js";

async function scrape(address: string): Promise<string> {
  const res = await fetch(`http://${address}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

function value(text: string, re: RegExp): number {
  const line = text.split("\n").find((l) => re.test(l));
  return line ? Number(line.trim().split(/\s+/).pop()) : Number.NaN;
}

describe("metrics of a running server", () => {
  let ts: TestServer;
  before(async () => {
    const pki = testServerPki();
    ts = await startTestServer({
      components: {
        httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
        adminConfig: { listenAddress: "127.0.0.1:0" },
        statsConfig: { address: "127.0.0.1:0" },
      },
    });
  });
  after(() => ts.stop());

  it("counts connected streaming clients and ingested messages", async () => {
    const metricsAddress = ts.server.metricsAddress!;
    assert.ok(metricsAddress);
    assert.equal(value(await scrape(metricsAddress), /^fleetspeak_frontend_connected_clients /), 0);
    const streams = [];
    for (let i = 0; i < 3; i++) {
      const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem });
      streams.push(await c.stream({ messages: [outMessage("TestService", "Hello")] }));
    }
    const text = await scrape(metricsAddress);
    assert.equal(value(text, /^fleetspeak_frontend_connected_clients /), 3);
    assert.equal(
      value(text, /^fleetspeak_messages_ingested_total\{.*destination_service="TestService".*message_type="Hello"/),
      3,
    );
    assert.match(text, /fleetspeak_server_datastore_operations_completed_latency_count\{operation="RecordClientContact"/);
    for (const s of streams) s.close();
  });
});
