import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack, EmptySchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger } from "../../../src/common/log.js";
import { LabelSchema, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import {
  KillNotification_Reason,
  KillNotificationSchema,
  ResourceUsageDataSchema,
} from "../../../src/gen/fleetspeak_monitoring/resource_pb.js";
import { Admin } from "../../../src/gen/fleetspeak_server/admin_pb.js";
import { startAdminServer } from "../../../src/server/admin/admin-server.js";
import {
  clientLabelsText,
  describeMessage,
  instrumentAdminService,
  instrumentNotifier,
  instrumentStore,
  Metrics,
} from "../../../src/server/observe/metrics.js";
import { startMetricsServer } from "../../../src/server/observe/metrics-server.js";
import { SqliteStore } from "../../../src/server/store/sqlite-store.js";
import { parseExposition, type Sample, sampleValue } from "./metrics-text.js";

const log = createLogger("test");

describe("Metrics over HTTP", () => {
  let metrics: Metrics;
  let server: Awaited<ReturnType<typeof startMetricsServer>>;
  const scrape = async (): Promise<Sample[]> => {
    const res = await fetch(`http://${server.address}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    return parseExposition(await res.text());
  };

  before(async () => {
    metrics = new Metrics();
    server = await startMetricsServer({ address: "127.0.0.1:0", metrics, logger: log });
  });
  after(() => server.close());

  it("serves /metrics and 404 elsewhere", async () => {
    assert.match(server.address, /^127\.0\.0\.1:\d+$/);
    const res = await fetch(`http://${server.address}/other`);
    assert.equal(res.status, 404);
    await res.text();
    const post = await fetch(`http://${server.address}/metrics`, { method: "POST" });
    assert.equal(post.status, 405);
    await post.text();
  });

  it("includes the Node.js process metrics", async () => {
    const samples = await scrape();
    assert.ok(samples.some((s) => s.name === "process_cpu_user_seconds_total"));
    assert.ok(samples.some((s) => s.name === "nodejs_eventloop_lag_seconds"));
  });

  it("shows connected clients from the callback at each scrape", async () => {
    let n = 3;
    metrics.trackConnectedClients(() => n);
    assert.equal(sampleValue(await scrape(), "fleetspeak_frontend_connected_clients"), 3);
    n = 5;
    assert.equal(sampleValue(await scrape(), "fleetspeak_frontend_connected_clients"), 5);
  });

  it("counts messages with Fleetspeak's names and labels", async () => {
    const m = create(MessageSchema, {
      source: { serviceName: "GRR", clientId: new Uint8Array(8) },
      destination: { serviceName: "GRR" },
      messageType: "MessageList",
      data: anyPack(EmptySchema, create(EmptySchema)),
    });
    const labels = [
      create(LabelSchema, { serviceName: "client", label: "linux" }),
      create(LabelSchema, { serviceName: "client", label: "alpha" }),
    ];
    const d = describeMessage(m, labels);
    metrics.messageIngested({ ...d, backlogged: false });
    metrics.messageIngested({ ...d, backlogged: false });
    metrics.messageIngested({ ...d, backlogged: true });
    metrics.messageSent({ sourceService: "GRR", destinationService: "GRR", messageType: "X" });
    metrics.messageSaved({ ...d, forClient: false });
    metrics.messageProcessed({ ...d, isFirstTry: true, seconds: 0.02 });
    metrics.messageErrored({ ...d, isTemp: true, isFirstTry: false, seconds: 1 });
    metrics.messageDropped({ ...d, isFirstTry: true });
    metrics.messagesDelivered(4);

    const s = await scrape();
    const ingest = {
      backlogged: "false",
      source_service: "GRR",
      destination_service: "GRR",
      message_type: "MessageList",
      client_labels: "client:alpha,client:linux",
    };
    assert.equal(sampleValue(s, "fleetspeak_messages_ingested_total", ingest), 2);
    assert.equal(sampleValue(s, "fleetspeak_messages_ingested_total", { ...ingest, backlogged: "true" }), 1);
    assert.equal(
      sampleValue(s, "fleetspeak_messages_ingested_payload_bytes_size", ingest),
      2 * (m.data!.typeUrl.length + m.data!.value.length),
    );
    // Fleetspeak declares four labels and passes three (a panic); ours has all four.
    assert.equal(
      sampleValue(s, "fleetspeak_messages_sent_total", {
        source_service: "GRR",
        destination_service: "GRR",
        message_type: "X",
        client_labels: "",
      }),
      1,
    );
    assert.equal(
      sampleValue(s, "fleetspeak_messages_saved_total", {
        service: "GRR",
        message_type: "MessageList",
        for_client: "false",
        client_labels: "client:alpha,client:linux",
      }),
      1,
    );
    assert.equal(
      sampleValue(s, "fleetspeak_server_messages_processed_latency_count", {
        message_type: "MessageList",
        service: "GRR",
        is_first_try: "true",
      }),
      1,
    );
    assert.equal(
      sampleValue(s, "fleetspeak_server_messages_errored_latency_sum", { is_temp: "true", is_first_try: "false" }),
      1,
    );
    assert.equal(sampleValue(s, "fleetspeak_server_messages_dropped_total", { service: "GRR" }), 1);
    assert.equal(sampleValue(s, "fleetspeak_messages_delivered_total"), 4);
  });

  it("records client polls", async () => {
    metrics.clientPoll({
      pollType: "STREAM_START",
      httpStatusCode: 200,
      cacheHit: false,
      durationSeconds: 0.5,
      readSeconds: 0.1,
      readBytes: 2_000_000,
    });
    const s = await scrape();
    const l = { http_status_code: "200", poll_type: "STREAM_START", cache_hit: "false" };
    assert.equal(sampleValue(s, "fleetspeak_server_client_polls_total", l), 1);
    assert.equal(sampleValue(s, "fleetspeak_server_client_polls_operation_time_latency_sum", l), 0.5);
    assert.equal(sampleValue(s, "fleetspeak_server_client_polls_read_megabytes_size_distribution_sum", l), 2);
    assert.equal(sampleValue(s, "fleetspeak_server_client_polls_write_time_latency_count", l), 1);
  });

  it("records resource usage and kill notifications", async () => {
    const client = { labels: [create(LabelSchema, { serviceName: "client", label: "b" })], blacklisted: false };
    metrics.resourceUsageReceived(
      client,
      create(ResourceUsageDataSchema, {
        scope: "GRR",
        version: "3.4",
        resourceUsage: { meanUserCpuRate: 2, maxSystemCpuRate: 7, maxResidentMemory: 1024n },
      }),
    );
    metrics.killNotificationReceived(
      client,
      create(KillNotificationSchema, { service: "GRR", reason: KillNotification_Reason.MEMORY_EXCEEDED }),
    );
    const s = await scrape();
    const l = { client_data_labels: "b", blacklisted: "false", scope: "GRR", version: "3.4" };
    assert.equal(sampleValue(s, "fleetspeak_server_resource_usage_data_received_total", l), 1);
    assert.equal(sampleValue(s, "fleetspeak_server_resource_usage_data_received_max_system_cpu_rate_sum", l), 7);
    assert.equal(
      sampleValue(s, "fleetspeak_server_resource_usage_data_received_max_resident_memory_bytes_distribution_sum", l),
      1024,
    );
    assert.equal(
      sampleValue(s, "fleetspeak_server_kill_notifications_received_total", { service: "GRR", reason: "MEMORY_EXCEEDED" }),
      1,
    );
  });

  it("counts notifications through instrumentNotifier and notificationReceived", async () => {
    let fail = false;
    let absent = false;
    const notifier = instrumentNotifier(
      {
        async newMessageForClient() {
          if (fail) throw new Error("connection refused");
          return absent ? "absent" : "held";
        },
      },
      metrics,
    );
    await notifier.newMessageForClient("10.0.0.1:10000", new Uint8Array(8));
    absent = true;
    assert.equal(await notifier.newMessageForClient("10.0.0.1:10000", new Uint8Array(8)), "absent");
    fail = true;
    await assert.rejects(notifier.newMessageForClient("10.0.0.1:10000", new Uint8Array(8)), /connection refused/);
    metrics.notificationReceived(true);
    metrics.notificationReceived(false);
    metrics.notificationReceived(false);
    const s = await scrape();
    assert.equal(sampleValue(s, "fleetspeak_notifications_sent_total", { result: "ok" }), 1);
    assert.equal(sampleValue(s, "fleetspeak_notifications_sent_total", { result: "absent" }), 1);
    assert.equal(sampleValue(s, "fleetspeak_notifications_sent_total", { result: "failed" }), 1);
    assert.equal(sampleValue(s, "fleetspeak_notifications_received_total", { known: "false" }), 2);
  });
});

describe("instrumentStore", () => {
  let dir: string;
  let raw: SqliteStore;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "fs-metrics-"));
    raw = await SqliteStore.open({ path: join(dir, "db.sqlite") });
  });
  after(async () => {
    await raw.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("times every operation under Fleetspeak's operation names, errors included", async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    const store = instrumentStore(raw, metrics);
    assert.equal(store.backend, "sqlite");
    await store.listClients([]);
    await store.listClients([]);
    await store.claimClientMessages(new Uint8Array(8), { limit: 10, leaseMs: 1000 });
    await store.ping();
    await assert.rejects(store.listClients([new Uint8Array(3)]));
    const s = parseExposition(await metrics.scrape());
    const name = "fleetspeak_server_datastore_operations_completed_latency_count";
    assert.equal(sampleValue(s, name, { operation: "ListClients", errored: "false" }), 2);
    assert.equal(sampleValue(s, name, { operation: "ListClients", errored: "true" }), 1);
    assert.equal(sampleValue(s, name, { operation: "ClientMessagesForProcessing", errored: "false" }), 1);
    assert.equal(sampleValue(s, name, { operation: "Ping", errored: "false" }), 1);
    assert.equal(
      s.filter((x) => x.name === name && x.labels.operation === "Close").length,
      0,
      "close is not a datastore operation",
    );
  });
});

describe("instrumentAdminService", () => {
  it("counts admin calls by RPC and status code", async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    const service = instrumentAdminService(
      {
        async keepAlive() {
          return {};
        },
        async listClients(req) {
          if (req.clientIds.length > 0) throw new ConnectError("bad id", Code.InvalidArgument);
          return { clients: [] };
        },
        async *streamClientIds() {
          yield { clientId: new Uint8Array(8) };
        },
      },
      metrics,
    );
    const admin = await startAdminServer({ listenAddress: "127.0.0.1:0", service, logger: log });
    try {
      const client = createClient(Admin, createGrpcTransport({ baseUrl: `http://${admin.address}` }));
      await client.keepAlive({});
      await client.listClients({});
      await assert.rejects(client.listClients({ clientIds: [new Uint8Array(1)] }));
      for await (const _ of client.streamClientIds({})) {
        // drain
      }
      await assert.rejects(client.insertMessage({}), (e: ConnectError) => e.code === Code.Unimplemented);
    } finally {
      await admin.close();
    }
    const s = parseExposition(await metrics.scrape());
    const name = "fleetspeak_admin_requests_total";
    assert.equal(sampleValue(s, name, { method: "KeepAlive", code: "OK" }), 1);
    assert.equal(sampleValue(s, name, { method: "ListClients", code: "OK" }), 1);
    assert.equal(sampleValue(s, name, { method: "ListClients", code: "InvalidArgument" }), 1);
    assert.equal(sampleValue(s, name, { method: "StreamClientIds", code: "OK" }), 1);
  });
});

describe("clientLabelsText", () => {
  it("sorts service:label pairs as Fleetspeak does", () => {
    const l = (serviceName: string, label: string) => create(LabelSchema, { serviceName, label });
    assert.equal(clientLabelsText([l("client", "b"), l("GRR", "z"), l("client", "a")]), "GRR:z,client:a,client:b");
    assert.equal(clientLabelsText([]), "");
  });
});
