// Every Fleetspeak message family round-trips through the text format: populated messages print
// and parse back into equal messages, hand-built ones for the config families and a reflective
// sweep that fills every field of every message in src/gen (each oneof member in turn).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, createRegistry, type DescFile, type DescMessage, equals, type MessageShape, ScalarType } from "@bufbuild/protobuf";
import { nestedTypes, type ReflectMessage, reflect } from "@bufbuild/protobuf/reflect";
import { anyPack, durationFromMs, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { parseText, printText } from "../../src/common/textproto/index.js";
import { file_fleetspeak_common, LabelSchema, Message_Priority, MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";
import { ClientServiceConfigSchema, file_fleetspeak_system } from "../../src/gen/fleetspeak/system_pb.js";
import { file_fleetspeak_channel_channel } from "../../src/gen/fleetspeak_channel/channel_pb.js";
import { file_fleetspeak_client_api } from "../../src/gen/fleetspeak_client/api_pb.js";
import { CommunicatorConfigSchema, file_fleetspeak_client_client } from "../../src/gen/fleetspeak_client/client_pb.js";
import {
  file_fleetspeak_client_generic_config,
  ConfigSchema as GenericClientConfigSchema,
} from "../../src/gen/fleetspeak_client_generic/config_pb.js";
import {
  ConfigSchema as ComponentsConfigSchema,
  file_fleetspeak_components_config,
  type FrontendConfigSchema,
  MTlsConfigSchema,
} from "../../src/gen/fleetspeak_components/config_pb.js";
import { ConfigSchema as ConfiguratorConfigSchema, file_fleetspeak_config_config } from "../../src/gen/fleetspeak_config/config_pb.js";
import { ConfigSchema as CpsConfigSchema, file_fleetspeak_cpsservice_cpsservice } from "../../src/gen/fleetspeak_cpsservice/cpsservice_pb.js";
import { ConfigSchema as DaemonConfigSchema, file_fleetspeak_daemonservice_config } from "../../src/gen/fleetspeak_daemonservice/config_pb.js";
import { file_fleetspeak_daemonservice_messages } from "../../src/gen/fleetspeak_daemonservice/messages_pb.js";
import { ConfigSchema as GrpcConfigSchema, file_fleetspeak_grpcservice_grpcservice } from "../../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { file_fleetspeak_monitoring_resource } from "../../src/gen/fleetspeak_monitoring/resource_pb.js";
import { file_fleetspeak_server_admin, ListClientsResponseSchema } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { file_fleetspeak_server_broadcasts } from "../../src/gen/fleetspeak_server/broadcasts_pb.js";
import { file_fleetspeak_server_resource } from "../../src/gen/fleetspeak_server/resource_pb.js";
import { file_fleetspeak_server_server, ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";
import { file_fleetspeak_server_services } from "../../src/gen/fleetspeak_server/services_pb.js";
import {
  file_fleetspeak_socketservice_config,
  ConfigSchema as SocketConfigSchema,
} from "../../src/gen/fleetspeak_socketservice/config_pb.js";
import { file_fleetspeak_stdinservice_config, LogLevel, ConfigSchema as StdinConfigSchema } from "../../src/gen/fleetspeak_stdinservice/config_pb.js";
import { file_fleetspeak_stdinservice_messages } from "../../src/gen/fleetspeak_stdinservice/messages_pb.js";

const FILES: DescFile[] = [
  file_fleetspeak_common,
  file_fleetspeak_system,
  file_fleetspeak_channel_channel,
  file_fleetspeak_client_api,
  file_fleetspeak_client_client,
  file_fleetspeak_client_generic_config,
  file_fleetspeak_components_config,
  file_fleetspeak_config_config,
  file_fleetspeak_cpsservice_cpsservice,
  file_fleetspeak_daemonservice_config,
  file_fleetspeak_daemonservice_messages,
  file_fleetspeak_grpcservice_grpcservice,
  file_fleetspeak_monitoring_resource,
  file_fleetspeak_server_admin,
  file_fleetspeak_server_broadcasts,
  file_fleetspeak_server_resource,
  file_fleetspeak_server_server,
  file_fleetspeak_server_services,
  file_fleetspeak_socketservice_config,
  file_fleetspeak_stdinservice_config,
  file_fleetspeak_stdinservice_messages,
];
const registry = createRegistry(...FILES);

const PEM = "-----BEGIN CERTIFICATE-----\nMIIBfTCCASOgAwIBAgIRAJ1c\n-----END CERTIFICATE-----\n";

function roundTrip<D extends DescMessage>(schema: D, message: MessageShape<D>): string {
  const text = printText(schema, message, { registry });
  const back = parseText(schema, text, { registry, fileName: schema.typeName });
  assert.ok(equals(schema, back, message), `${schema.typeName} changed in the round trip:\n${text}`);
  assert.equal(printText(schema, back, { registry }), text);
  return text;
}

describe("config families round-trip through text format", () => {
  it("components Config with each frontend mode", () => {
    const modes: MessageShape<typeof FrontendConfigSchema>["frontendMode"][] = [
      { case: undefined },
      { case: "mtlsConfig", value: create(MTlsConfigSchema) },
      { case: "httpsHeaderConfig", value: { $typeName: "fleetspeak.components.HttpsHeaderConfig", clientCertificateHeader: "ssl-client-cert" } },
      {
        case: "httpsHeaderChecksumConfig",
        value: {
          $typeName: "fleetspeak.components.HttpsHeaderChecksumConfig",
          clientCertificateHeader: "ssl-client-cert",
          clientCertificateChecksumHeader: "ssl-client-cert-checksum",
        },
      },
      { case: "cleartextHeaderConfig", value: { $typeName: "fleetspeak.components.CleartextHeaderConfig", clientCertificateHeader: "x-client-cert" } },
      {
        case: "cleartextHeaderChecksumConfig",
        value: {
          $typeName: "fleetspeak.components.CleartextHeaderChecksumConfig",
          clientCertificateHeader: "x-client-cert",
          clientCertificateChecksumHeader: "x-client-cert-checksum",
        },
      },
      { case: "cleartextXfccConfig", value: { $typeName: "fleetspeak.components.CleartextXfccConfig", clientCertificateHeader: "x-forwarded-client-cert" } },
    ];
    const seen = new Set<string>();
    for (const frontendMode of modes) {
      const c = create(ComponentsConfigSchema, {
        mysqlDataSourceName: "fleetspeak:secret@tcp(127.0.0.1:3306)/fleetspeak?parseTime=true",
        httpsConfig: {
          listenAddress: "0.0.0.0:4443",
          certificates: PEM,
          key: "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n",
          disableStreaming: true,
          frontendConfig: { frontendMode },
          enableFileServerAuthorization: true,
        },
        adminConfig: { listenAddress: "127.0.0.1:4444" },
        statsConfig: { address: "127.0.0.1:9090" },
        healthCheckConfig: { listenAddress: "127.0.0.1:8080" },
        proxyProtocol: true,
        requiredLabel: "corp",
        notificationListenAddress: "10.0.0.5:12000",
        notificationPublicAddress: "fs-1.internal:12000",
        notificationUseHttpNotifier: true,
      });
      const text = roundTrip(ComponentsConfigSchema, c);
      assert.ok(text.includes('  certificates: "-----BEGIN CERTIFICATE-----\\nMIIBfTCCASOgAwIBAgIRAJ1c\\n-----END CERTIFICATE-----\\n"\n'));
      seen.add(/frontend_config \{\n {4}(\w+)/.exec(text)?.[1] ?? "none");
    }
    assert.equal(seen.size, modes.length);
    const spanner = create(ComponentsConfigSchema, {
      spannerConfig: { projectId: "p", instanceName: "i", databaseName: "d", pubsubTopic: "t", pubsubSub: "s" },
    });
    roundTrip(ComponentsConfigSchema, spanner);
  });

  it("ServerConfig with GRPC, CPS and NOOP services", () => {
    const s = create(ServerConfigSchema, {
      services: [
        { name: "GRR", factory: "GRPC", maxParallelism: 50, config: anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: "localhost:11111", insecure: true })) },
        {
          name: "TLS",
          factory: "GRPC",
          config: anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: "grr.internal:443", certFile: "/etc/ca.pem" })),
        },
        { name: "Pubsub", factory: "CPS", config: anyPack(CpsConfigSchema, create(CpsConfigSchema, { project: "p", topic: "t" })) },
        { name: "NOOP", factory: "NOOP", maxParallelism: 4294967295 },
      ],
      broadcastPollTime: durationFromMs(1500),
    });
    const text = roundTrip(ServerConfigSchema, s);
    assert.ok(text.includes("  config {\n    [type.googleapis.com/fleetspeak.cpsservice.Config] {\n      project: \"p\"\n"));
    assert.ok(text.endsWith("broadcast_poll_time {\n  seconds: 1\n  nanos: 500000000\n}\n"));
  });

  it("generic client Config with each persistence handler", () => {
    for (const persistenceHandler of [
      { case: "filesystemHandler" as const, value: { configurationDirectory: "/etc/fleetspeak-client", stateFile: "/var/lib/fleetspeak-client/state" } },
      { case: "registryHandler" as const, value: { configurationKey: "HKEY_LOCAL_MACHINE\\SOFTWARE\\FleetspeakClient" } },
    ]) {
      const c = create(GenericClientConfigSchema, {
        trustedCerts: PEM + PEM,
        server: ["fleetspeak.example.com:4443", "[2001:db8::1]:4443"],
        clientLabel: ["linux", "corp"],
        persistenceHandler,
        streaming: true,
        proxy: "http://proxy.internal:3128",
        clientCertificateHeader: "ssl-client-cert",
        serverName: "fleetspeak.example.com",
      });
      const text = roundTrip(GenericClientConfigSchema, c);
      assert.ok(!text.includes("\\\\") || text.includes('configuration_key: "HKEY_LOCAL_MACHINE\\\\SOFTWARE\\\\FleetspeakClient"'));
    }
  });

  it("CommunicatorConfig", () => {
    const c = create(CommunicatorConfigSchema, {
      maxPollDelaySeconds: 300,
      maxBufferDelaySeconds: 5,
      minFailureDelaySeconds: 300,
      failureSuicideTimeSeconds: 604800,
      compression: 1,
      preferHttp2: true,
    });
    assert.ok(roundTrip(CommunicatorConfigSchema, c).includes("compression: COMPRESSION_DEFLATE\n"));
  });

  it("ClientServiceConfig with Daemon, socket and stdin service configs in Any", () => {
    const daemon = create(DaemonConfigSchema, {
      argv: ["/usr/bin/python3", "-m", "grr_response_client.client", "--config", "C:\\Program Files\\GRR\\grr.yaml"],
      inactivityTimeout: durationFromMs(3_600_000),
      lazyStart: true,
      disableResourceMonitoring: false,
      resourceMonitoringSampleSize: 20,
      resourceMonitoringSamplePeriodSeconds: 30,
      resourceMonitoringSamplePeriod: durationFromMs(30_000),
      memoryLimit: 2n ** 33n,
      monitorHeartbeats: true,
      heartbeatUnresponsiveGracePeriodSeconds: 600,
      heartbeatUnresponsiveGracePeriod: durationFromMs(600_000),
      heartbeatUnresponsiveKillPeriodSeconds: 60,
      heartbeatUnresponsiveKillPeriod: durationFromMs(60_000),
      stdParams: { serviceName: "GRR", flushBytes: 1 << 20, flushTimeSeconds: 60 },
    });
    roundTrip(DaemonConfigSchema, daemon);
    const configs = [
      anyPack(DaemonConfigSchema, daemon),
      anyPack(SocketConfigSchema, create(SocketConfigSchema, { apiProxyPath: "/var/run/fs.sock", resourceMonitoringSampleSize: 5 })),
      anyPack(StdinConfigSchema, create(StdinConfigSchema, { cmd: "/bin/sh", args: ["-c", "echo 'hi'"], logLevel: LogLevel.ALL })),
    ];
    for (const config of configs) {
      const c = create(ClientServiceConfigSchema, {
        name: "svc",
        factory: "Daemon",
        config,
        requiredLabels: [create(LabelSchema, { serviceName: "client", label: "linux" })],
        signedTime: timestampFromMs(Date.UTC(2024, 0, 2, 3, 4, 5, 678)),
      });
      const text = roundTrip(ClientServiceConfigSchema, c);
      assert.ok(text.includes(`  [${config.typeUrl}] {\n`), text);
    }
  });

  it("configurator Config", () => {
    const c = create(ConfiguratorConfigSchema, {
      configurationName: "Example",
      componentsConfig: { mysqlDataSourceName: "root@tcp(127.0.0.1:3306)/fs", httpsConfig: { listenAddress: "0.0.0.0:4443" }, adminConfig: { listenAddress: "0.0.0.0:4444" } },
      trustedCertFile: "/etc/fs/ca.pem",
      trustedCertKeyFile: "/etc/fs/ca.key",
      serverCertFile: "/etc/fs/server.pem",
      serverCertKeyFile: "/etc/fs/server.key",
      serverComponentConfigurationFile: "/etc/fs/server.components.config",
      publicHostPort: ["fs.example.com:4443", "10.0.0.1:4443"],
      linuxClientConfigurationFile: "/etc/fs/linux_client.config",
      darwinClientConfigurationFile: "/etc/fs/darwin_client.config",
      windowsClientConfigurationFile: "/etc/fs/windows_client.config",
      serverName: "fs.example.com",
      proxy: "http://proxy:3128",
    });
    roundTrip(ConfiguratorConfigSchema, c);
  });

  it("admin ListClientsResponse and a full fleetspeak.Message", () => {
    const r = create(ListClientsResponseSchema, {
      clients: [
        {
          clientId: new Uint8Array([0x5c, 0xd2, 0x52, 0xfb, 0x0c, 0xe8, 0x93, 0x24]),
          labels: [{ serviceName: "client", label: "linux" }, { serviceName: "GRR", label: "é" }],
          lastContactTime: timestampFromMs(1_700_000_000_123),
          lastContactAddress: "192.0.2.1:51234",
          lastContactStreamingTo: "fs-1.internal:12000",
          lastClock: timestampFromMs(1_700_000_000_000),
          blacklisted: true,
        },
        { clientId: new Uint8Array(8) },
      ],
    });
    const text = roundTrip(ListClientsResponseSchema, r);
    assert.ok(text.includes('  client_id: "\\\\\\322R\\373\\014\\350\\223$"\n'), text);
    const m = create(MessageSchema, {
      messageId: new Uint8Array(32).fill(7),
      source: { clientId: new Uint8Array(8).fill(1), serviceName: "GRR" },
      sourceMessageId: new Uint8Array([0, 255]),
      destination: { serviceName: "GRR" },
      messageType: "MessageList",
      creationTime: timestampFromMs(5),
      data: anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: "x" })),
      validationInfo: { tags: { b: "2", a: "1" } },
      result: { processedTime: timestampFromMs(6), failed: true, failedReason: "boom\n" },
      priority: Message_Priority.HIGH,
      background: true,
      annotations: { entries: [{ key: "k", value: "v" }] },
      isBlocklistedSource: true,
    });
    roundTrip(MessageSchema, m);
  });
});

// ---- reflective sweep --------------------------------------------------------------------------

function sampleScalar(type: ScalarType, i: number): unknown {
  switch (type) {
    case ScalarType.STRING:
      return ["text \"quoted\" \\ é\n", "0.0.0.0:4443", "#x"][i % 3];
    case ScalarType.BYTES:
      return new Uint8Array([i, 0, 255, 0x22, 0x5c, 0x41]);
    case ScalarType.BOOL:
      return true;
    case ScalarType.DOUBLE:
      return [0.1, -1e300, 2.5][i % 3];
    case ScalarType.FLOAT:
      return Math.fround([0.1, -3.5, 1e30][i % 3]!);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return [-(2n ** 63n), 2n ** 63n - 1n, 42n][i % 3];
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return [2n ** 64n - 1n, 1n, 42n][i % 3];
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return [4294967295, 1, 42][i % 3];
    default:
      return [-2147483648, 2147483647, -1][i % 3];
  }
}

const packedSample = anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: "localhost:11111", insecure: true }));

/** Sets every field; `variant` picks which member of each oneof wins. */
function fill(r: ReflectMessage, variant: number, depth: number): void {
  if (r.desc.typeName === "google.protobuf.Any") {
    r.set(r.desc.fields.find((f) => f.name === "type_url")!, packedSample.typeUrl);
    r.set(r.desc.fields.find((f) => f.name === "value")!, packedSample.value);
    return;
  }
  for (const field of r.desc.fields) {
    if (field.oneof !== undefined && field.oneof.fields[variant % field.oneof.fields.length] !== field) continue;
    switch (field.fieldKind) {
      case "scalar":
        r.set(field, sampleScalar(field.scalar, variant));
        break;
      case "enum":
        r.set(field, field.enum.values[field.enum.values.length - 1]!.number);
        break;
      case "message":
        if (depth < 4) {
          const sub = reflect(field.message);
          fill(sub, variant, depth + 1);
          r.set(field, sub);
        }
        break;
      case "list":
        for (let i = 0; i < 2; i++) {
          if (field.listKind === "scalar") r.get(field).add(sampleScalar(field.scalar, i));
          else if (field.listKind === "enum") r.get(field).add(field.enum.values[i % field.enum.values.length]!.number);
          else if (depth < 4) {
            const sub = reflect(field.message);
            fill(sub, variant + i, depth + 1);
            r.get(field).add(sub);
          }
        }
        break;
      case "map":
        for (let i = 0; i < 2; i++) {
          const key = field.mapKey === ScalarType.BOOL ? i === 0 : sampleScalar(field.mapKey, i + 1);
          let value: unknown;
          if (field.mapKind === "scalar") value = sampleScalar(field.scalar, i);
          else if (field.mapKind === "enum") value = field.enum.values[i % field.enum.values.length]!.number;
          else {
            const sub = reflect(field.message);
            if (depth < 4) fill(sub, variant, depth + 1);
            value = sub;
          }
          r.get(field).set(key, value);
        }
        break;
    }
  }
}

describe("every message in src/gen round-trips through text format", () => {
  const messages = FILES.flatMap((file) => [...nestedTypes(file)].filter((t): t is DescMessage => t.kind === "message"));

  it("covers the generated files", () => {
    assert.ok(messages.length >= 60, `only ${messages.length} messages found`);
  });

  for (const desc of messages) {
    it(desc.typeName, () => {
      const variants = Math.max(1, ...desc.oneofs.map((o) => o.fields.length));
      for (let v = 0; v < variants; v++) {
        const r = reflect(desc);
        fill(r, v, 0);
        const text = roundTrip(desc, r.message);
        if (desc.fields.length > 0) assert.notEqual(text, "");
      }
    });
  }
});
