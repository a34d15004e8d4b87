// GRR's side of the admin API, spoken by an independent gRPC stack: Python grpcio with stubs
// generated from our proto/ files, calling our admin server the way GRR's connector does.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { bytesToHex } from "../../../src/common/ids.js";
import { LabelSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { ResourceUsageDataSchema } from "../../../src/gen/fleetspeak_monitoring/resource_pb.js";
import { runPythonScript } from "../../support/python-grpc.js";
import { type AdminHarness, startAdminHarness } from "./harness.js";

interface ConnectorReport {
  keep_alive: boolean;
  clients: { client_id: string; labels: string[]; last_contact_address: string; has_last_contact_time: boolean; blacklisted: boolean }[];
  inserted_id: string;
  pending_count: number;
  pending: {
    message_id: string;
    source: string;
    destination_client_id: string;
    message_type: string;
    data_type_url: string;
    data_hex: string;
    annotations: Record<string, string>;
    has_creation_time: boolean;
  }[];
  paged_has_data: boolean[];
  records: { scope: string; pid: number; max_resident_memory_mib: number }[];
  pending_count_after_delete: number;
  errors: Record<string, { code: string; details: string } | null>;
  keep_alive_after_errors: boolean;
}

describe("admin API from Python grpcio (GRR's connector)", () => {
  let h: AdminHarness;
  const client = randomBytes(8);

  before(async () => {
    h = await startAdminHarness();
    await h.store.addClient(client, {
      key: randomBytes(91),
      labels: [create(LabelSchema, { serviceName: "client", label: "linux" })],
      blacklisted: false,
    });
    await h.store.recordClientContact({
      clientId: client,
      sentNonce: 1n,
      receivedNonce: 2n,
      address: "198.51.100.4:5000",
      streamingTo: "frontend-b:9090",
    });
    await h.store.recordResourceUsageData(
      client,
      create(ResourceUsageDataSchema, {
        scope: "GRR",
        pid: 4321n,
        processStartTime: timestampFromMs(Date.now() - 60_000),
        dataTimestamp: timestampNow(),
        resourceUsage: { maxResidentMemory: 64n * 1024n * 1024n },
      }),
    );
  });
  after(() => h.close());

  it("InsertMessage, ListClients, GetPendingMessages(Count), DeletePendingMessages, FetchClientResourceUsageRecords, KeepAlive", async () => {
    const out = await runPythonScript("admin_connector.py", [h.server.address, bytesToHex(client), bytesToHex(randomBytes(8))]);
    const r = JSON.parse(out) as ConnectorReport;

    assert.equal(r.keep_alive, true);
    assert.deepEqual(r.clients, [
      {
        client_id: bytesToHex(client),
        labels: ["client:linux"],
        last_contact_address: "198.51.100.4:5000",
        has_last_contact_time: true,
        blacklisted: false,
      },
    ]);

    assert.equal(r.pending_count, 1, "the retried InsertMessage was stored once");
    assert.equal(r.pending.length, 1);
    assert.deepEqual(r.pending[0], {
      message_id: r.inserted_id,
      source: "GRR",
      destination_client_id: bytesToHex(client),
      message_type: "GrrMessage",
      data_type_url: "type.googleapis.com/grr.GrrMessage",
      data_hex: "0a03616263",
      annotations: { flow_id: "F:1234" },
      has_creation_time: true,
    });
    assert.equal(r.inserted_id.length, 64);
    assert.deepEqual(r.paged_has_data, [false]);
    assert.equal(h.notifier.calls.length, 2, "each InsertMessage notified the client's frontend");
    assert.equal(h.notifier.calls[0]!.target, "frontend-b:9090");

    assert.deepEqual(r.records, [{ scope: "GRR", pid: 4321, max_resident_memory_mib: 64 }]);
    assert.equal(r.pending_count_after_delete, 0);
    const status = await h.client.getMessageStatus({ messageId: Buffer.from(r.inserted_id, "hex") });
    assert.equal(status.result?.failedReason, "Removed by admin action.");

    assert.equal(r.errors.unknown_client?.code, "NOT_FOUND");
    assert.match(r.errors.unknown_client?.details ?? "", /^expected 1 destination client result, got 0/);
    assert.deepEqual(r.errors.offset_without_limit, {
      code: "INVALID_ARGUMENT",
      details: "Can't read pending messages: if offset is provided, a limit must be provided as well",
    });
    assert.deepEqual(r.errors.missing_timestamps, {
      code: "INVALID_ARGUMENT",
      details: "invalid nil Timestamp: start_timestamp is required",
    });
    assert.equal(r.errors.too_large?.code, "RESOURCE_EXHAUSTED");
    assert.equal(r.keep_alive_after_errors, true);
  });
});
