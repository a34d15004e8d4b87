// GRR's side of message forwarding, spoken by an independent gRPC stack: a Python grpcio Processor
// (like fleetspeak_python's Servicer) receives what our service manager forwards, configured by
// the GRR example services config.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { StringValueSchema } from "@bufbuild/protobuf/wkt";
import { bytesToHex } from "../../../src/common/ids.js";
import { createLogger } from "../../../src/common/log.js";
import { parseText } from "../../../src/common/textproto/index.js";
import { ServerConfigSchema } from "../../../src/gen/fleetspeak_server/server_pb.js";
import { serverConfigRegistry } from "../../../src/server/config.js";
import { ServiceManager } from "../../../src/server/services/manager.js";
import { type PythonProcess, startPythonScript } from "../../support/python-grpc.js";
import { addClient, fromClient, openTestStore, type TestStore } from "./harness.js";

describe("forwarding to a Python grpcio Processor", () => {
  let ts: TestStore;
  let py: PythonProcess;
  let manager: ServiceManager;

  before(async () => {
    ts = await openTestStore();
    py = await startPythonScript("processor_server.py", ["GRR"]);
    const port = Number((await py.waitLine((l) => l.startsWith("PORT "))).slice(5));
    const config = parseText(
      ServerConfigSchema,
      `services {
         name: "GRR"
         factory: "GRPC"
         config {
           [type.googleapis.com/fleetspeak.grpcservice.Config] {
             target: "localhost:${port}"
             insecure: true
           }
         }
       }
       broadcast_poll_time { seconds: 1 }`,
      { registry: serverConfigRegistry },
    );
    manager = new ServiceManager({
      store: ts.store,
      logger: createLogger("python-processor-test"),
      lookupClient: (id) => ts.store.getClientData(id),
      processTimeoutMs: 3000,
    });
    await manager.install(config);
  });
  after(async () => {
    await manager.stop();
    await py.stop();
    await ts.close();
  });

  it("delivers client messages with their fields; the Processor's INVALID_ARGUMENT fails a message for good", async () => {
    const good = await addClient(ts.store);
    const blocked = await addClient(ts.store, { blacklisted: true });
    const m1 = fromClient(good.id, "GRR", "MessageList", StringValueSchema, create(StringValueSchema, { value: "hi" }));
    const m2 = fromClient(blocked.id, "GRR", "MessageList", StringValueSchema, create(StringValueSchema, { value: "x" }));
    const rejected = fromClient(good.id, "GRR", "Reject", StringValueSchema, create(StringValueSchema, { value: "no" }));
    await manager.handleClientMessages([m1, rejected], good.contactId);
    await manager.handleClientMessages([m2], blocked.contactId);

    // The Python process prints what it received on its own schedule: wait for both lines.
    const seen = () =>
      new Map(
        py.lines
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .map((r) => [r.message_id as string, r]),
      );
    const deadline = Date.now() + 10_000;
    while (![m1, m2].every((m) => seen().has(bytesToHex(m.messageId))) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const byId = seen();
    assert.deepEqual(byId.get(bytesToHex(m1.messageId)), {
      message_id: bytesToHex(m1.messageId),
      source_client_id: bytesToHex(good.id),
      source_service: "GRR",
      destination_service: "GRR",
      message_type: "MessageList",
      data_type_url: "type.googleapis.com/google.protobuf.StringValue",
      data_hex: "0a026869",
      tags: { os: "linux" },
      has_creation_time: true,
      is_blocklisted_source: false,
    });
    assert.equal(byId.get(bytesToHex(m2.messageId))?.is_blocklisted_source, true);
    assert.equal(byId.has(bytesToHex(rejected.messageId)), false);

    for (const m of [m1, m2]) {
      const st = await ts.store.getMessageStatus(m.messageId);
      assert.equal(st?.result?.failed, false);
    }
    const failed = await ts.store.getMessageStatus(rejected.messageId);
    assert.equal(failed?.result?.failed, true);
    assert.equal(failed?.result?.failedReason, "rpc error: code = InvalidArgument desc = rejected by the test integrator");
  });
});
