import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack, StringValueSchema, timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createCa } from "../../../src/common/certs.js";
import { randomMessageId } from "../../../src/common/ids.js";
import { parseText } from "../../../src/common/textproto/index.js";
import { MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { ConfigSchema as GrpcConfigSchema } from "../../../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { Admin } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { ServerConfigSchema } from "../../../src/gen/fleetspeak_server/server_pb.js";
import { type ServiceConfig, ServiceConfigSchema } from "../../../src/gen/fleetspeak_server/services_pb.js";
import { startAdminServer } from "../../../src/server/admin/admin-server.js";
import { AdminService } from "../../../src/server/admin/admin-service.js";
import { serverConfigRegistry } from "../../../src/server/config.js";
import { ServiceManager, type ServiceManagerOptions } from "../../../src/server/services/manager.js";
import { defaultServiceFactories } from "../../../src/server/services/service-factories.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";
import type { Store } from "../../../src/server/store/store.js";
import { reservePort, startProcessor, type TestProcessor } from "../../support/processor-server.js";
import { testServerPki } from "../../support/tls.js";
import {
  addClient,
  capturingLogger,
  eventually,
  fromClient,
  openBackend,
  openTestStore,
  switchableStore,
  type TestStore,
} from "./harness.js";

const GRR_EXAMPLE = `
services {
  name: "GRR"
  factory: "GRPC"
  config {
    [type.googleapis.com/fleetspeak.grpcservice.Config] {
      target: "localhost:11111"
      insecure: true
    }
  }
}
broadcast_poll_time { seconds: 1 }
`;

function grpcService(name: string, target: string, extra: { maxParallelism?: number; certFile?: string } = {}): ServiceConfig {
  return create(ServiceConfigSchema, {
    name,
    factory: "GRPC",
    maxParallelism: extra.maxParallelism ?? 0,
    config: anyPack(
      GrpcConfigSchema,
      create(GrpcConfigSchema, extra.certFile ? { target, certFile: extra.certFile } : { target, insecure: true }),
    ),
  });
}

/** Short timings for tests; the defaults are Fleetspeak's. */
function fastManager(store: Store, extra: Partial<ServiceManagerOptions> = {}) {
  const { logger, lines } = capturingLogger();
  const manager = new ServiceManager({
    store,
    logger,
    lookupClient: (id) => store.getClientData(id),
    factories: defaultServiceFactories({ grpc: { initialBackoffMs: 20 } }),
    processTimeoutMs: 400,
    backlogPollMs: 20,
    retryBaseMs: 50,
    ...extra,
  });
  return { manager, lines };
}

function payload(text: string) {
  return create(StringValueSchema, { value: text });
}

describe("service manager: installing services", () => {
  let ts: TestStore;
  before(async () => {
    ts = await openTestStore();
  });
  after(() => ts.close());

  it("installs the GRR example from Fleetspeak's server.services.config as written", async () => {
    const cfg = parseText(ServerConfigSchema, GRR_EXAMPLE, { registry: serverConfigRegistry });
    const { manager } = fastManager(ts.store);
    await manager.install(cfg);
    assert.deepEqual(manager.serviceNames().sort(), ["GRR", "system"]);
    await manager.stop();
  });

  it("refuses reserved names and unknown factories with Fleetspeak's texts", async () => {
    const { manager } = fastManager(ts.store);
    for (const name of ["", "system", "client"]) {
      await assert.rejects(
        manager.installService(create(ServiceConfigSchema, { name, factory: "NOOP" })),
        new RegExp(`^Error: illegal service name \\[${name}\\]`),
      );
    }
    await assert.rejects(
      manager.installService(create(ServiceConfigSchema, { name: "x", factory: "Pigeon" })),
      /^Error: unable to find factory \[Pigeon\]/,
    );
    await assert.rejects(
      manager.installService(create(ServiceConfigSchema, { name: "x", factory: "CPS" })),
      /factory CPS \(Google Cloud Pub\/Sub\) is not supported by this server/,
    );
    await manager.stop();
  });

  it("refuses a GRPC config without insecure or cert_file, and a config of the wrong type", async () => {
    const { manager } = fastManager(ts.store);
    await assert.rejects(
      manager.installService(
        create(ServiceConfigSchema, {
          name: "GRR",
          factory: "GRPC",
          config: anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: "localhost:1" })),
        }),
      ),
      /^Error: GRPCService requires either insecure or cert_file to be set, got: target:"localhost:1"/,
    );
    await assert.rejects(
      manager.installService(
        create(ServiceConfigSchema, { name: "GRR", factory: "GRPC", config: anyPack(StringValueSchema, payload("x")) }),
      ),
      /config has type "type.googleapis.com\/google.protobuf.StringValue", expected type.googleapis.com\/fleetspeak.grpcservice.Config/,
    );
    await assert.rejects(
      manager.installService(create(ServiceConfigSchema, { name: "GRR", factory: "GRPC" })),
      /config is missing/,
    );
    await assert.rejects(manager.installService(grpcService("GRR", "unix:///tmp/grr.sock")), /is not supported; write it as "host:port"/);
    await manager.stop();
  });

  it("a later service of the same name replaces the earlier one", async () => {
    const first = await startProcessor();
    const second = await startProcessor();
    const { manager } = fastManager(ts.store);
    await manager.install(
      create(ServerConfigSchema, { services: [grpcService("GRR", first.address), grpcService("GRR", second.address)] }),
    );
    const c = await addClient(ts.store);
    await manager.handleClientMessages([fromClient(c.id, "GRR", "T", StringValueSchema, payload("hi"))], c.contactId);
    assert.equal(first.calls.length, 0);
    assert.equal(second.processed.length, 1);
    await manager.stop();
    await first.close();
    await second.close();
  });
});

describe("service manager: forwarding to a Processor", () => {
  let ts: TestStore;
  let processor: TestProcessor;
  let behaviour: (callIndex: number) => void | Promise<void> = () => {};
  const admin = { close: async () => {}, client: undefined as unknown as ReturnType<typeof createClient<typeof Admin>> };

  before(async () => {
    ts = await openTestStore();
    processor = await startProcessor({ handle: (_m, i) => behaviour(i) });
    const { logger } = capturingLogger();
    const server = await startAdminServer({
      listenAddress: "127.0.0.1:0",
      service: new AdminService({ store: ts.store, notifier: { newMessageForClient: async () => {} }, logger }),
      logger,
    });
    admin.close = () => server.close();
    admin.client = createClient(Admin, createGrpcTransport({ baseUrl: `http://${server.address}` }));
  });
  after(async () => {
    await admin.close();
    await processor.close();
    await ts.close();
  });

  async function statusOf(id: Uint8Array) {
    return admin.client.getMessageStatus({ messageId: id });
  }

  it("delivers client messages with their fields and is_blocklisted_source, and records them processed", async () => {
    behaviour = () => {};
    const { manager } = fastManager(ts.store);
    await manager.installService(grpcService("GRR", processor.address));
    const good = await addClient(ts.store);
    const bad = await addClient(ts.store, { blacklisted: true });
    const m1 = fromClient(good.id, "GRR", "MessageList", StringValueSchema, payload("one"));
    const m2 = fromClient(bad.id, "GRR", "MessageList", StringValueSchema, payload("two"));
    const start = processor.processed.length;
    await manager.handleClientMessages([m1], good.contactId);
    await manager.handleClientMessages([m2], bad.contactId);
    const got = processor.processed.slice(start);
    assert.equal(got.length, 2);
    assert.equal(Buffer.from(got[0]!.messageId).toString("hex"), Buffer.from(m1.messageId).toString("hex"));
    assert.equal(Buffer.from(got[0]!.source!.clientId).toString("hex"), Buffer.from(good.id).toString("hex"));
    assert.equal(got[0]!.destination?.serviceName, "GRR");
    assert.equal(got[0]!.destination?.clientId.length, 0);
    assert.equal(got[0]!.messageType, "MessageList");
    assert.equal(got[0]!.validationInfo?.tags.os, "linux");
    assert.ok(got[0]!.creationTime);
    assert.equal(got[0]!.isBlocklistedSource, false);
    assert.equal(got[1]!.isBlocklistedSource, true);
    for (const m of [m1, m2]) {
      const st = await statusOf(m.messageId);
      assert.ok(st.result?.processedTime);
      assert.equal(st.result?.failed, false);
    }
    await manager.stop();
  });

  it("retries a Processor that fails temporarily, within the budget", async () => {
    const { manager } = fastManager(ts.store, { processTimeoutMs: 5000 });
    await manager.installService(grpcService("GRR", processor.address));
    const c = await addClient(ts.store);
    const first = processor.calls.length;
    behaviour = (i) => {
      if (i < first + 2) throw new ConnectError("warming up", Code.Unavailable);
    };
    const m = fromClient(c.id, "GRR", "MessageList", StringValueSchema, payload("retry me"));
    await manager.handleClientMessages([m], c.contactId);
    assert.equal(processor.calls.length - first, 3);
    assert.equal((await statusOf(m.messageId)).result?.failed, false);
    await manager.stop();
  });

  it("marks a message failed with the Processor's permanent error, visible in GetMessageStatus", async () => {
    // The budget runs out while the service waits between attempts (not during a call, which
    // would make the outcome "canceled", i.e. temporary).
    const { manager } = fastManager(ts.store, {
      factories: defaultServiceFactories({ grpc: { initialBackoffMs: 150 } }),
    });
    await manager.installService(grpcService("GRR", processor.address));
    const c = await addClient(ts.store);
    behaviour = () => {
      throw new ConnectError("unknown message type", Code.InvalidArgument);
    };
    const m = fromClient(c.id, "GRR", "Bogus", StringValueSchema, payload("x"));
    const long = fromClient(c.id, "GRR", "Bogus", StringValueSchema, payload("y"));
    await manager.handleClientMessages([m], c.contactId);
    const st = await statusOf(m.messageId);
    assert.equal(st.result?.failed, true);
    assert.equal(st.result?.failedReason, "rpc error: code = InvalidArgument desc = unknown message type");

    behaviour = () => {
      throw new ConnectError("e".repeat(2000), Code.Internal);
    };
    await manager.handleClientMessages([long], c.contactId);
    const reason = (await statusOf(long.messageId)).result?.failedReason ?? "";
    assert.equal(reason.length, 900);
    assert.ok(reason.startsWith("rpc error: code = Internal desc = eee"));
    assert.ok(reason.endsWith("e..."));
    behaviour = () => {};
    await manager.stop();
  });

  it("fails a message for an unknown service", async () => {
    const { manager } = fastManager(ts.store);
    const c = await addClient(ts.store);
    const m = fromClient(c.id, "nope", "T", StringValueSchema, payload("x"));
    await manager.handleClientMessages([m], c.contactId);
    const st = await statusOf(m.messageId);
    assert.equal(st.result?.failed, true);
    assert.equal(st.result?.failedReason, 'unknown service "nope"');
    await manager.stop();
  });

  it("over max_parallelism, the excess stays pending and the backlog delivers it later", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const { manager } = fastManager(ts.store, { processTimeoutMs: 10_000 });
    await manager.installService(grpcService("GRR", processor.address, { maxParallelism: 1 }));
    const c = await addClient(ts.store);
    const first = processor.calls.length;
    behaviour = async (i) => {
      if (i === first) await gate;
    };
    const msgs = [0, 1].map((i) => fromClient(c.id, "GRR", "T", StringValueSchema, payload(`m${i}`)));
    const handling = manager.handleClientMessages(msgs, c.contactId);
    await eventually(() => processor.calls.length > first);
    release();
    await handling;
    assert.equal(processor.calls.length - first, 1);
    const states = await Promise.all(msgs.map((m) => statusOf(m.messageId)));
    assert.equal(states.filter((s) => s.result?.processedTime).length, 1);
    assert.equal(states.filter((s) => s.creationTime && !s.result).length, 1);
    manager.start();
    await eventually(async () => {
      const all = await Promise.all(msgs.map((m) => statusOf(m.messageId)));
      return all.every((s) => s.result?.processedTime && !s.result.failed);
    });
    await manager.stop();
  });
});

for (const backend of ["sqlite", "mariadb"] as const) {
  describe(`service manager: an integrator that is down (${backend})`, () => {
    it("keeps messages pending, then the backlog delivers every one once the Processor is up", async () => {
      const ts = await openBackend(backend);
      const port = await reservePort();
      const { manager, lines } = fastManager(ts.store, { processTimeoutMs: 150 });
      await manager.installService(grpcService("GRR", `127.0.0.1:${port}`));
      const c = await addClient(ts.store);
      const msgs = Array.from({ length: 25 }, (_, i) => fromClient(c.id, "GRR", "T", StringValueSchema, payload(`m${i}`)));
      await manager.handleClientMessages(msgs, c.contactId);
      for (const m of msgs) {
        const st = await ts.store.getMessageStatus(m.messageId);
        assert.ok(st, "stored");
        assert.equal(st.result, undefined, "still pending");
      }

      const processor = await startProcessor({ port });
      manager.start();
      const explain = () =>
        `Processor calls ${processor.calls.length}, processed ${processor.processed.length}; manager log:\n` +
        lines.map((l) => JSON.stringify(l)).join("\n");
      await eventually(() => processor.processed.length >= 25, { explain });
      await eventually(async () => {
        const all = await Promise.all(msgs.map((m) => ts.store.getMessageStatus(m.messageId)));
        return all.every((s) => s?.result?.processedTime && !s.result.failed);
      }, { explain });
      const delivered = new Set(processor.processed.map((m) => Buffer.from(m.messageId).toString("hex")));
      for (const m of msgs) assert.ok(delivered.has(Buffer.from(m.messageId).toString("hex")));
      await manager.stop();
      await processor.close();
      await ts.cleanup();
    });

    it("processes admin-inserted messages for a server service through the backlog", async () => {
      const ts = await openBackend(backend);
      const processor = await startProcessor();
      const { manager } = fastManager(ts.store);
      await manager.installService(grpcService("GRR", processor.address));
      const m = create(MessageSchema, {
        messageId: randomMessageId(),
        source: { serviceName: "GRR" },
        destination: { serviceName: "GRR" },
        messageType: "Echo",
        creationTime: timestampNow(),
      });
      await ts.store.storeMessages([m], { serverDueMs: Date.now() });
      manager.start();
      await processor.waitProcessed(1);
      await eventually(async () => (await ts.store.getMessageStatus(m.messageId))?.result?.processedTime !== undefined);
      await manager.stop();
      await processor.close();
      await ts.cleanup();
    });
  });
}

describe("service manager: backlog during a database outage", () => {
  it("backs off without crashing, logs the outage once, and resumes when the database is back", async () => {
    const ts = await openTestStore();
    const processor = await startProcessor();
    const sw = switchableStore(ts.store);
    const { manager, lines } = fastManager(sw.store);
    await manager.installService(grpcService("GRR", processor.address));
    const m = create(MessageSchema, {
      messageId: randomMessageId(),
      source: { serviceName: "GRR" },
      destination: { serviceName: "GRR" },
      messageType: "Echo",
      creationTime: timestampNow(),
    });
    await ts.store.storeMessages([m], { serverDueMs: Date.now() });
    await ts.store.close();
    manager.start();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(processor.calls.length, 0);
    const reopened = await SqliteStore.open({ path: ts.path });
    sw.set(reopened);
    await processor.waitProcessed(1);
    await eventually(async () => (await reopened.getMessageStatus(m.messageId))?.result?.processedTime !== undefined);
    await manager.stop();
    const outage = lines.filter((l) => l.msg.startsWith("service backlog: cannot claim due messages"));
    assert.equal(outage.length, 1);
    assert.equal(outage[0]!.unavailable, true);
    assert.equal(lines.filter((l) => l.msg === "service backlog: database reachable again").length, 1);
    await processor.close();
    await reopened.close();
    await ts.close().catch(() => {});
  });
});

describe("service manager: a client's messages while the database is away", () => {
  it("hands a message to its service once, and keeps trying to store it until the database is back", async () => {
    const ts = await openTestStore();
    let answer: () => void = () => {};
    const answered = new Promise<void>((r) => {
      answer = r;
    });
    const processor = await startProcessor({ handle: () => answered });
    const sw = switchableStore(ts.store);
    const { manager } = fastManager(sw.store);
    await manager.installService(grpcService("GRR", processor.address));
    const c = await addClient(ts.store);
    const m = fromClient(c.id, "GRR", "T", StringValueSchema, payload("once"));
    let failures = 0;
    const handling = manager.handleClientMessages([m], c.contactId, {
      keepTrying: (n) => {
        failures = n;
        return true;
      },
    });
    // The database goes away while the Processor has the message.
    await eventually(async () => processor.calls.length === 1);
    await ts.store.close();
    answer();
    await eventually(async () => failures >= 2);
    sw.set(await SqliteStore.open({ path: ts.path }));
    await handling;
    assert.equal(processor.calls.length, 1, "handed to the Processor again for an attempt to store it");
    assert.equal((await sw.store.getMessageStatus(m.messageId))?.result?.failed, false);
    await manager.stop();
    await processor.close();
    await sw.store.close();
    await ts.close().catch(() => {});
  });
});

describe("GRPC factory over TLS", () => {
  it("trusts cert_file as the CA of the Processor", async () => {
    const ts = await openTestStore();
    const pki = testServerPki();
    const processor = await startProcessor({ tls: { certPem: pki.certChainPem, keyPem: pki.keyPem } });
    const caFile = join(ts.dir, "ca.pem");
    writeFileSync(caFile, pki.ca.certPem);
    const { manager } = fastManager(ts.store);
    await manager.installService(grpcService("GRR", `localhost:${processor.port}`, { certFile: caFile }));
    const c = await addClient(ts.store);
    const m = fromClient(c.id, "GRR", "T", StringValueSchema, payload("secret"));
    await manager.handleClientMessages([m], c.contactId);
    assert.equal(processor.processed.length, 1);
    assert.equal((await ts.store.getMessageStatus(m.messageId))?.result?.failed, false);
    await assert.rejects(
      manager.installService(grpcService("GRR2", "localhost:1", { certFile: join(ts.dir, "missing.pem") })),
      /cannot read cert_file .*missing\.pem/,
    );
    await manager.stop();
    await processor.close();
    await ts.close();
  });

  it("a Processor whose certificate is not trusted leaves the message pending", async () => {
    const ts = await openTestStore();
    const pki = testServerPki();
    const processor = await startProcessor({ tls: { certPem: pki.certChainPem, keyPem: pki.keyPem } });
    const otherCa = join(ts.dir, "other-ca.pem");
    writeFileSync(otherCa, createCa("unrelated").certPem);
    const { manager } = fastManager(ts.store, { processTimeoutMs: 200 });
    await manager.installService(grpcService("GRR", `localhost:${processor.port}`, { certFile: otherCa }));
    const c = await addClient(ts.store);
    const m = fromClient(c.id, "GRR", "T", StringValueSchema, payload("x"));
    await manager.handleClientMessages([m], c.contactId);
    assert.equal(processor.calls.length, 0);
    assert.equal((await ts.store.getMessageStatus(m.messageId))?.result, undefined);
    await manager.stop();
    await processor.close();
    await ts.close();
  });
});
