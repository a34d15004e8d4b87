// Our .proto files must encode exactly like upstream Fleetspeak's. Two kinds of checks:
// every message type survives toBinary -> fromBinary with all of its fields set, and hand-computed
// byte vectors pin field numbers, wire types and the encoding of integer kinds.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  create,
  type DescFile,
  type DescMessage,
  equals,
  fromBinary,
  isFieldSet,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import {
  AddressSchema,
  AnnotationsSchema,
  CompressionAlgorithm,
  ContactDataSchema,
  EmptyMessageSchema,
  file_fleetspeak_common,
  LabelSchema,
  Message_Priority,
  MessageResultSchema,
  MessageSchema,
  SignatureSchema,
  ValidationInfoSchema,
  WrappedContactDataSchema,
} from "../../src/gen/fleetspeak/common_pb.js";
import {
  ClientInfoDataSchema,
  ClientServiceConfigSchema,
  ClientServiceConfigsSchema,
  DieRequestSchema,
  file_fleetspeak_system,
  MessageAckDataSchema,
  MessageErrorDataSchema,
  RemoveServiceDataSchema,
  RestartServiceRequestSchema,
  RevokedCertificateListSchema,
  SignedClientServiceConfigSchema,
} from "../../src/gen/fleetspeak/system_pb.js";
import { file_fleetspeak_channel_channel, StartupDataSchema } from "../../src/gen/fleetspeak_channel/channel_pb.js";
import { APIMessageSchema, ByteBlobSchema, file_fleetspeak_client_api } from "../../src/gen/fleetspeak_client/api_pb.js";
import {
  ClientStateSchema,
  CommunicatorConfigSchema,
  file_fleetspeak_client_client,
} from "../../src/gen/fleetspeak_client/client_pb.js";
import {
  file_fleetspeak_client_generic_config,
  FilesystemHandlerSchema,
  ConfigSchema as GenericConfigSchema,
  RegistryHandlerSchema,
} from "../../src/gen/fleetspeak_client_generic/config_pb.js";
import {
  AdminConfigSchema,
  ConsoleConfigSchema,
  CleartextHeaderChecksumConfigSchema,
  CleartextHeaderConfigSchema,
  CleartextXfccConfigSchema,
  ConfigSchema as ComponentsConfigSchema,
  FrontendConfigSchema,
  FrontendLimitsSchema,
  file_fleetspeak_components_config,
  HealthCheckConfigSchema,
  HttpsConfigSchema,
  HttpsHeaderChecksumConfigSchema,
  HttpsHeaderConfigSchema,
  MTlsConfigSchema,
  SpannerConfigSchema,
  StatsConfigSchema,
} from "../../src/gen/fleetspeak_components/config_pb.js";
import {
  ConfigSchema as ConfiguratorConfigSchema,
  DistributedSchema,
  file_fleetspeak_config_config,
  MachineSchema,
} from "../../src/gen/fleetspeak_config/config_pb.js";
import {
  ConfigSchema as CpsConfigSchema,
  file_fleetspeak_cpsservice_cpsservice,
} from "../../src/gen/fleetspeak_cpsservice/cpsservice_pb.js";
import {
  Config_StdParamsSchema,
  ConfigSchema as DaemonConfigSchema,
  file_fleetspeak_daemonservice_config,
} from "../../src/gen/fleetspeak_daemonservice/config_pb.js";
import {
  file_fleetspeak_daemonservice_messages,
  StdOutputDataSchema,
} from "../../src/gen/fleetspeak_daemonservice/messages_pb.js";
import {
  file_fleetspeak_grpcservice_grpcservice,
  ConfigSchema as GrpcConfigSchema,
  Processor,
} from "../../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import {
  AggregatedResourceUsageSchema,
  file_fleetspeak_monitoring_resource,
  KillNotification_Reason,
  KillNotificationSchema,
  ResourceUsageDataSchema,
} from "../../src/gen/fleetspeak_monitoring/resource_pb.js";
import {
  Admin,
  BlacklistClientRequestSchema,
  ClientContactSchema,
  ClientSchema,
  CreateBroadcastRequestSchema,
  DeleteFileRequestSchema,
  DeletePendingMessagesRequestSchema,
  DisableBroadcastsRequestSchema,
  FetchClientResourceUsageRecordsRequestSchema,
  FetchClientResourceUsageRecordsResponseSchema,
  file_fleetspeak_server_admin,
  GetMessageStatusRequestSchema,
  GetMessageStatusResponseSchema,
  GetPendingMessageCountRequestSchema,
  GetPendingMessageCountResponseSchema,
  GetPendingMessagesRequestSchema,
  GetPendingMessagesResponseSchema,
  ListActiveBroadcastsRequestSchema,
  ListActiveBroadcastsResponseSchema,
  ListClientContactsRequestSchema,
  ListClientContactsResponseSchema,
  ListClientsRequestSchema,
  ListClientsResponseSchema,
  StoreFileRequestSchema,
  StreamClientContactsRequestSchema,
  StreamClientContactsResponseSchema,
  StreamClientIdsRequestSchema,
  StreamClientIdsResponseSchema,
} from "../../src/gen/fleetspeak_server/admin_pb.js";
import { BroadcastSchema, file_fleetspeak_server_broadcasts } from "../../src/gen/fleetspeak_server/broadcasts_pb.js";
import {
  ClientResourceUsageRecordSchema,
  file_fleetspeak_server_resource,
} from "../../src/gen/fleetspeak_server/resource_pb.js";
import { file_fleetspeak_server_server, ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";
import { file_fleetspeak_server_services, ServiceConfigSchema } from "../../src/gen/fleetspeak_server/services_pb.js";
import {
  ConfigSchema as SocketConfigSchema,
  file_fleetspeak_socketservice_config,
} from "../../src/gen/fleetspeak_socketservice/config_pb.js";
import {
  file_fleetspeak_stdinservice_config,
  LogLevel,
  ConfigSchema as StdinConfigSchema,
} from "../../src/gen/fleetspeak_stdinservice/config_pb.js";
import {
  file_fleetspeak_stdinservice_messages,
  InputMessageSchema,
  OutputMessageSchema,
} from "../../src/gen/fleetspeak_stdinservice/messages_pb.js";

const ALL_FILES: DescFile[] = [
  file_fleetspeak_common,
  file_fleetspeak_system,
  file_fleetspeak_monitoring_resource,
  file_fleetspeak_server_admin,
  file_fleetspeak_server_broadcasts,
  file_fleetspeak_server_resource,
  file_fleetspeak_server_server,
  file_fleetspeak_server_services,
  file_fleetspeak_components_config,
  file_fleetspeak_grpcservice_grpcservice,
  file_fleetspeak_cpsservice_cpsservice,
  file_fleetspeak_client_client,
  file_fleetspeak_client_api,
  file_fleetspeak_client_generic_config,
  file_fleetspeak_daemonservice_config,
  file_fleetspeak_daemonservice_messages,
  file_fleetspeak_socketservice_config,
  file_fleetspeak_stdinservice_config,
  file_fleetspeak_stdinservice_messages,
  file_fleetspeak_channel_channel,
  file_fleetspeak_config_config,
];

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

function unhex(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text.replace(/\s+/g, ""), "hex"));
}

// Descriptor ranges are half-open [start, end).
function reservedTags(desc: DescMessage): number[] {
  return desc.proto.reservedRange.flatMap((r) => Array.from({ length: r.end - r.start }, (_, i) => r.start + i));
}

// Type names of messages seen fully populated; the coverage test compares it with all types.
const populated = new Set<string>();

// Every field of desc (and of nested Fleetspeak messages) is set, and each oneof has a case.
function assertPopulated(desc: DescMessage, msg: unknown, path: string): void {
  if (desc.typeName.startsWith("google.protobuf.")) return;
  populated.add(desc.typeName);
  const raw = msg as Record<string, unknown>;
  for (const oneof of desc.oneofs) {
    const value = raw[oneof.localName] as { case: string | undefined; value?: unknown };
    assert.ok(value.case !== undefined, `${path}.${oneof.name}: no oneof case set`);
    const field = oneof.fields.find((f) => f.localName === value.case)!;
    if (field.message) assertPopulated(field.message, value.value, `${path}.${field.name}`);
  }
  for (const field of desc.fields) {
    if (field.oneof) continue;
    assert.ok(isFieldSet(msg as never, field), `${path}.${field.name} is not set; populate it in the fixture`);
    const value = raw[field.localName];
    if (field.fieldKind === "message") assertPopulated(field.message, value, `${path}.${field.name}`);
    if (field.fieldKind === "list" && field.listKind === "message") {
      for (const item of value as unknown[]) assertPopulated(field.message, item, `${path}.${field.name}[]`);
    }
  }
}

function roundtrip<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>): void {
  const original = create(schema, init);
  assertPopulated(schema, original, schema.typeName);
  const bytes = toBinary(schema, original);
  const decoded = fromBinary(schema, bytes);
  assert.ok(equals(schema, original, decoded), `${schema.typeName} changed in a binary round trip`);
  assert.equal(hex(toBinary(schema, decoded)), hex(bytes), `${schema.typeName} re-encodes differently`);
}

// Encodes init and compares with the expected hex; decodes the hex and compares with init.
function golden<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>, expected: string): void {
  const msg = create(schema, init);
  assert.equal(hex(toBinary(schema, msg)), expected.replace(/\s+/g, ""), `${schema.typeName} encoding`);
  assert.ok(equals(schema, fromBinary(schema, unhex(expected)), msg), `${schema.typeName} decoding of ${expected}`);
}

const clientId = unhex("0102030405060708");
const messageId = new Uint8Array(32).fill(0xab);
const ts = { seconds: 1700000000n, nanos: 123 };
const duration = { seconds: 90n, nanos: 5 };
const label = { serviceName: "client", label: "linux" };
const address = { clientId, serviceName: "GRR" };
const payload = anyPack(LabelSchema, create(LabelSchema, label));

const fullMessage: MessageInitShape<typeof MessageSchema> = {
  messageId,
  source: address,
  isBlocklistedSource: true,
  sourceMessageId: unhex("00112233445566778899aabbccddeeff"),
  destination: address,
  messageType: "MessageAck",
  creationTime: ts,
  data: payload,
  validationInfo: { tags: { origin: "test" } },
  result: { processedTime: ts, failed: true, failedReason: "boom" },
  priority: Message_Priority.HIGH,
  background: true,
  annotations: { entries: [{ key: "k", value: "v" }] },
};

const fullContactData: MessageInitShape<typeof ContactDataSchema> = {
  sequencingNonce: 0xfedcba9876543210n,
  messages: [fullMessage],
  clientClock: ts,
  ackIndex: 3n,
  doneSending: true,
  AllowedMessages: { system: 100n, GRR: 42n },
};

const fullResourceUsage: MessageInitShape<typeof ResourceUsageDataSchema> = {
  scope: "system",
  pid: 4242n,
  version: "1.2.3",
  processStartTime: ts,
  dataTimestamp: ts,
  resourceUsage: {
    meanUserCpuRate: 1.5,
    maxUserCpuRate: 2.5,
    meanSystemCpuRate: 0.25,
    maxSystemCpuRate: 0.75,
    meanResidentMemory: 1048576.5,
    maxResidentMemory: 2097152n,
    maxNumFds: 12,
    meanNumFds: 10.5,
  },
  debugStatus: "ok",
  processTerminated: true,
};

const fullBroadcast: MessageInitShape<typeof BroadcastSchema> = {
  broadcastId: clientId,
  source: address,
  destination: address,
  messageType: "Hello",
  requiredLabels: [label],
  expirationTime: ts,
  data: payload,
  groupName: "group",
};

const fullClientContact = {
  sentNonce: 0xffffffffffffffffn,
  receivedNonce: 7n,
  observedAddress: "127.0.0.1:5555",
  timestamp: ts,
};

const fullHttpsConfig: MessageInitShape<typeof HttpsConfigSchema> = {
  listenAddress: "0.0.0.0:4443",
  certificates: "-----BEGIN CERTIFICATE-----",
  key: "-----BEGIN EC PRIVATE KEY-----",
  disableStreaming: true,
  frontendConfig: { frontendMode: { case: "mtlsConfig", value: {} } },
  enableFileServerAuthorization: true,
  limits: { maxConnections: 50000, maxPendingConnections: 4096, maxBufferedRequestBytes: 1n << 40n, maxStreamFramesPerSecond: 100 },
};

const fullComponentsConfig: MessageInitShape<typeof ComponentsConfigSchema> = {
  mysqlDataSourceName: "root@tcp(127.0.0.1:3306)/fleetspeak",
  httpsConfig: fullHttpsConfig,
  adminConfig: {
    listenAddress: "127.0.0.1:9091",
    tlsCertificates: "-----BEGIN CERTIFICATE-----",
    tlsKey: "-----BEGIN EC PRIVATE KEY-----",
    clientCaCertificates: "-----BEGIN CERTIFICATE-----",
    console: { listenAddress: "127.0.0.1:6062", loginSecret: ["new-login-secret", "old-login-secret"] },
  },
  statsConfig: { address: "127.0.0.1:9092" },
  healthCheckConfig: { listenAddress: "127.0.0.1:9093" },
  proxyProtocol: true,
  requiredLabel: "linux",
  notificationListenAddress: "0.0.0.0:10000",
  notificationPublicAddress: "fs1:10000",
  notificationUseHttpNotifier: true,
  notificationSharedSecret: ["new-secret-0123456789", "old-secret-0123456789"],
  notificationWithoutMessages: true,
  workerProcesses: 4,
  workerNotificationPort: 10001,
  spannerConfig: {
    projectId: "p",
    instanceName: "i",
    databaseName: "d",
    pubsubTopic: "t",
    pubsubSub: "s",
  },
};

describe("fleetspeak common and system", () => {
  it("round-trips every message", () => {
    roundtrip(AddressSchema, address);
    roundtrip(ValidationInfoSchema, { tags: { a: "b", c: "d" } });
    roundtrip(MessageSchema, fullMessage);
    roundtrip(MessageResultSchema, { processedTime: ts, failed: true, failedReason: "x" });
    roundtrip(AnnotationsSchema, { entries: [{ key: "a", value: "b" }] });
    roundtrip(LabelSchema, label);
    roundtrip(SignatureSchema, { certificate: [unhex("3082"), unhex("3083")], algorithm: 10, signature: unhex("ff") });
    roundtrip(WrappedContactDataSchema, {
      contactData: toBinary(ContactDataSchema, create(ContactDataSchema, fullContactData)),
      signatures: [{ certificate: [unhex("30")], algorithm: 4, signature: unhex("01") }],
      clientLabels: ["amd64", "linux"],
    });
    roundtrip(ContactDataSchema, fullContactData);
    roundtrip(EmptyMessageSchema, {});
    roundtrip(MessageAckDataSchema, { messageIds: [messageId, new Uint8Array(32)] });
    roundtrip(MessageErrorDataSchema, { messageId, error: "unable to process" });
    roundtrip(ClientInfoDataSchema, { labels: [label], services: [{ name: "GRR", signature: unhex("99") }] });
    roundtrip(RemoveServiceDataSchema, { name: "GRR" });
    roundtrip(SignedClientServiceConfigSchema, { serviceConfig: unhex("0a03475252"), signature: unhex("01") });
    const serviceConfig = {
      name: "GRR",
      factory: "Daemon",
      config: anyPack(DaemonConfigSchema, create(DaemonConfigSchema, { argv: ["/bin/true"] })),
      requiredLabels: [label],
      signedTime: ts,
    };
    roundtrip(ClientServiceConfigSchema, serviceConfig);
    roundtrip(ClientServiceConfigsSchema, { config: [serviceConfig] });
    roundtrip(RevokedCertificateListSchema, { serials: [unhex("01"), unhex("7fff")] });
    roundtrip(DieRequestSchema, { force: true });
    roundtrip(RestartServiceRequestSchema, { name: "GRR" });
  });

  it("ContactData tags 4 and 5 are ack_index and done_sending", () => {
    golden(ContactDataSchema, { ackIndex: 1n }, "2001");
    golden(ContactDataSchema, { doneSending: true }, "2801");
  });

  it("ContactData nonce, messages, clock and AllowedMessages", () => {
    golden(ContactDataSchema, { sequencingNonce: 300n }, "08ac02");
    golden(ContactDataSchema, { messages: [{}] }, "1200");
    golden(ContactDataSchema, { clientClock: { seconds: 1n, nanos: 2 } }, "1a0408011002");
    // Map field 6; each entry is a message {1: string key, 2: uint64 value}.
    golden(ContactDataSchema, { AllowedMessages: { system: 100n } }, "320a 0a0673797374656d 1064");
  });

  it("Message ids, field order and is_blocklisted_source = 13", () => {
    golden(MessageSchema, { messageId }, `0a20${"ab".repeat(32)}`);
    golden(MessageSchema, { isBlocklistedSource: true }, "6801");
    // Written in field-number order although 13 is declared between 2 and 3.
    golden(
      MessageSchema,
      { source: { serviceName: "a" }, isBlocklistedSource: true, sourceMessageId: unhex("01") },
      "1203120161 1a0101 6801",
    );
  });

  it("Message payload, bookkeeping and flags", () => {
    golden(MessageSchema, { destination: { serviceName: "b" } }, "2203120162");
    golden(MessageSchema, { messageType: "Die" }, "2a03446965");
    golden(MessageSchema, { creationTime: { seconds: 1n, nanos: 2 } }, "320408011002");
    golden(MessageSchema, { data: { typeUrl: "t", value: unhex("01") } }, "3a060a0174120101");
    golden(MessageSchema, { validationInfo: { tags: { a: "b" } } }, "42080a060a0161120162");
    golden(MessageSchema, { result: { processedTime: { seconds: 1n } } }, "4a0412020801");
    golden(MessageSchema, { result: { failed: true, failedReason: "x" } }, "4a051801220178");
    golden(MessageSchema, { priority: Message_Priority.HIGH }, "5002");
    golden(MessageSchema, { priority: Message_Priority.LOW }, "5001");
    golden(MessageSchema, { background: true }, "5801");
    golden(MessageSchema, { annotations: { entries: [{ key: "k", value: "v" }] } }, "62080a060a016b120176");
  });

  it("Address, Label, Signature and WrappedContactData", () => {
    golden(AddressSchema, { clientId, serviceName: "x" }, "0a080102030405060708 120178");
    golden(LabelSchema, label, "0a06636c69656e74 12056c696e7578");
    golden(SignatureSchema, { certificate: [unhex("30")], algorithm: 10, signature: unhex("ff") }, "0a0130 100a 1a01ff");
    golden(
      WrappedContactDataSchema,
      {
        contactData: unhex("2001"),
        signatures: [{ certificate: [unhex("30")], algorithm: 10, signature: unhex("ff") }],
        clientLabels: ["linux"],
      },
      "0a022001 1208 0a0130100a1a01ff 1a056c696e7578",
    );
  });

  it("system payloads", () => {
    golden(MessageAckDataSchema, { messageIds: [unhex("0102")] }, "0a020102");
    golden(MessageErrorDataSchema, { messageId: unhex("01"), error: "e" }, "0a0101 120165");
    golden(
      ClientInfoDataSchema,
      { labels: [{ serviceName: "client", label: "x" }], services: [{ name: "s", signature: unhex("09") }] },
      "0a0b0a06636c69656e74120178 12060a0173120109",
    );
    golden(ClientServiceConfigSchema, { requiredLabels: [{ label: "x" }], signedTime: { seconds: 1n } }, "3203120178 3a020801");
    golden(SignedClientServiceConfigSchema, { serviceConfig: unhex("0a00"), signature: unhex("01") }, "0a020a00 120101");
    golden(RevokedCertificateListSchema, { serials: [unhex("01")] }, "0a0101");
    golden(DieRequestSchema, { force: true }, "0801");
    golden(RestartServiceRequestSchema, { name: "s" }, "0a0173");
  });

  it("Any type URLs carry the upstream full names", () => {
    const any = anyPack(MessageAckDataSchema, create(MessageAckDataSchema, { messageIds: [messageId] }));
    assert.equal(any.typeUrl, "type.googleapis.com/fleetspeak.MessageAckData");
    assert.equal(anyUnpack(any, MessageAckDataSchema)?.messageIds.length, 1);
    assert.equal(
      anyPack(ResourceUsageDataSchema, create(ResourceUsageDataSchema)).typeUrl,
      "type.googleapis.com/fleetspeak.monitoring.ResourceUsageData",
    );
    assert.equal(CompressionAlgorithm.COMPRESSION_DEFLATE, 1);
  });
});

describe("fleetspeak.monitoring", () => {
  it("round-trips every message", () => {
    roundtrip(ResourceUsageDataSchema, fullResourceUsage);
    roundtrip(AggregatedResourceUsageSchema, fullResourceUsage.resourceUsage!);
    roundtrip(KillNotificationSchema, {
      service: "GRR",
      pid: 1n,
      version: "v",
      processStartTime: ts,
      killedWhen: ts,
      reason: KillNotification_Reason.MEMORY_EXCEEDED,
    });
  });

  it("field numbers and integer kinds", () => {
    golden(ResourceUsageDataSchema, { version: "v" }, "420176");
    golden(ResourceUsageDataSchema, { processTerminated: true }, "3801");
    golden(ResourceUsageDataSchema, { pid: -1n }, "10ffffffffffffffffff01"); // int64, not sint64
    golden(ResourceUsageDataSchema, { resourceUsage: { maxNumFds: 7 } }, "2a023807");
    golden(AggregatedResourceUsageSchema, { meanUserCpuRate: 1 }, "09000000000000f03f"); // double
    golden(AggregatedResourceUsageSchema, { maxResidentMemory: 5n }, "3005");
    golden(AggregatedResourceUsageSchema, { meanNumFds: 0.5 }, "41000000000000e03f");
    golden(KillNotificationSchema, { reason: KillNotification_Reason.MEMORY_EXCEEDED }, "3002");
    golden(KillNotificationSchema, { killedWhen: { seconds: 1n } }, "2a020801");
  });
});

describe("fleetspeak.server admin, broadcasts, resource, server config", () => {
  it("round-trips every message", () => {
    const client = {
      clientId,
      labels: [label],
      lastContactTime: ts,
      lastContactAddress: "10.0.0.1:1234",
      lastContactStreamingTo: "fs1:10000",
      lastClock: ts,
      blacklisted: true,
    };
    const record = {
      scope: "system",
      pid: 77n,
      processStartTime: ts,
      clientTimestamp: ts,
      serverTimestamp: ts,
      processTerminated: true,
      meanUserCpuRate: 1.5,
      maxUserCpuRate: 2.5,
      meanSystemCpuRate: 0.5,
      maxSystemCpuRate: 0.75,
      meanResidentMemoryMib: 10,
      maxResidentMemoryMib: 20,
      meanNumFds: 5,
      maxNumFds: 9,
    };
    roundtrip(BroadcastSchema, fullBroadcast);
    roundtrip(ClientResourceUsageRecordSchema, record);
    roundtrip(CreateBroadcastRequestSchema, { broadcast: fullBroadcast, limit: 9223372036854775807n });
    roundtrip(ListActiveBroadcastsRequestSchema, { serviceName: "GRR" });
    roundtrip(ListActiveBroadcastsResponseSchema, { broadcasts: [fullBroadcast] });
    roundtrip(DisableBroadcastsRequestSchema, { broadcastIds: [clientId] });
    roundtrip(ListClientsRequestSchema, { clientIds: [clientId] });
    roundtrip(ListClientsResponseSchema, { clients: [client] });
    roundtrip(StreamClientIdsRequestSchema, { includeBlacklisted: true, lastContactAfter: ts });
    roundtrip(StreamClientIdsResponseSchema, { clientId });
    roundtrip(ClientSchema, client);
    roundtrip(GetMessageStatusRequestSchema, { messageId });
    roundtrip(GetMessageStatusResponseSchema, { creationTime: ts, result: { processedTime: ts, failed: true, failedReason: "r" } });
    roundtrip(DeletePendingMessagesRequestSchema, { clientIds: [clientId] });
    roundtrip(GetPendingMessagesRequestSchema, { clientIds: [clientId], offset: 10n, limit: 20n, wantData: true });
    roundtrip(GetPendingMessagesResponseSchema, { messages: [fullMessage] });
    roundtrip(GetPendingMessageCountRequestSchema, { clientIds: [clientId] });
    roundtrip(GetPendingMessageCountResponseSchema, { count: 3n });
    roundtrip(StoreFileRequestSchema, { serviceName: "system", fileName: "RevokedCertificates", data: unhex("0a0101") });
    roundtrip(DeleteFileRequestSchema, { serviceName: "system", fileName: "RevokedCertificates" });
    roundtrip(ListClientContactsRequestSchema, { clientId });
    roundtrip(ListClientContactsResponseSchema, { contacts: [fullClientContact] });
    roundtrip(StreamClientContactsRequestSchema, { clientId });
    roundtrip(StreamClientContactsResponseSchema, { contact: fullClientContact });
    roundtrip(ClientContactSchema, fullClientContact);
    roundtrip(BlacklistClientRequestSchema, { clientId });
    roundtrip(FetchClientResourceUsageRecordsRequestSchema, { clientId, startTimestamp: ts, endTimestamp: ts });
    roundtrip(FetchClientResourceUsageRecordsResponseSchema, { records: [record] });
    const grpc = anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: "localhost:1337", insecure: true }));
    const service = { name: "GRR", factory: "GRPC", maxParallelism: 50, config: grpc };
    roundtrip(ServiceConfigSchema, service);
    roundtrip(ServerConfigSchema, { services: [service], broadcastPollTime: duration });
  });

  it("ClientContact nonces are fixed64 (tags 0x09, 0x11)", () => {
    golden(ClientContactSchema, { sentNonce: 1n }, "090100000000000000");
    golden(ClientContactSchema, { receivedNonce: 0x0102030405060708n }, "110807060504030201");
    golden(ClientContactSchema, { observedAddress: "a", timestamp: { seconds: 1n } }, "1a0161 22020801");
  });

  it("Client, requests and responses", () => {
    golden(ClientSchema, { clientId, labels: [{ label: "x" }] }, "0a080102030405060708 1203120178");
    golden(ClientSchema, { lastContactAddress: "a", lastClock: { seconds: 1n } }, "220161 2a020801");
    golden(ClientSchema, { blacklisted: true, lastContactStreamingTo: "s" }, "3001 3a0173");
    golden(CreateBroadcastRequestSchema, { limit: 9223372036854775807n }, "10ffffffffffffffff7f");
    golden(StreamClientIdsRequestSchema, { includeBlacklisted: true, lastContactAfter: { seconds: 1n } }, "0801 12020801");
    golden(GetPendingMessagesRequestSchema, { offset: 1n, limit: 2n, wantData: true }, "1001 1802 2001");
    golden(GetMessageStatusResponseSchema, { result: { failed: true } }, "12021801");
    golden(StoreFileRequestSchema, { serviceName: "s", fileName: "f", data: unhex("01") }, "0a0173 120166 1a0101");
    golden(FetchClientResourceUsageRecordsRequestSchema, { startTimestamp: { seconds: 1n } }, "1a020801");
    golden(FetchClientResourceUsageRecordsRequestSchema, { endTimestamp: { seconds: 1n } }, "22020801");
  });

  it("Broadcast, resource record and server config", () => {
    golden(BroadcastSchema, { destination: { serviceName: "d" } }, "3a03120164");
    golden(BroadcastSchema, { messageType: "m", groupName: "g" }, "1a016d 420167");
    golden(BroadcastSchema, { requiredLabels: [{ label: "x" }], expirationTime: { seconds: 1n } }, "2203120178 2a020801");
    golden(ClientResourceUsageRecordSchema, { meanUserCpuRate: 1 }, "350000803f"); // float, fixed32
    golden(ClientResourceUsageRecordSchema, { processTerminated: true }, "6001");
    golden(ClientResourceUsageRecordSchema, { meanResidentMemoryMib: 3, maxNumFds: 4 }, "5003 7004");
    golden(ServiceConfigSchema, { name: "n", factory: "GRPC", maxParallelism: 5 }, "0a016e 120447525043 1805");
    golden(ServiceConfigSchema, { config: { typeUrl: "t" } }, "22030a0174");
    golden(ServerConfigSchema, { broadcastPollTime: { seconds: 60n } }, "1202083c");
  });

  it("Admin has the 17 upstream RPCs in order, with their streaming kinds", () => {
    assert.equal(Admin.typeName, "fleetspeak.server.Admin");
    const expected: [string, string, string, string][] = [
      ["CreateBroadcast", "unary", "fleetspeak.server.CreateBroadcastRequest", "fleetspeak.EmptyMessage"],
      ["ListActiveBroadcasts", "unary", "fleetspeak.server.ListActiveBroadcastsRequest", "fleetspeak.server.ListActiveBroadcastsResponse"],
      ["DisableBroadcasts", "unary", "fleetspeak.server.DisableBroadcastsRequest", "fleetspeak.EmptyMessage"],
      ["ListClients", "unary", "fleetspeak.server.ListClientsRequest", "fleetspeak.server.ListClientsResponse"],
      ["StreamClientIds", "server_streaming", "fleetspeak.server.StreamClientIdsRequest", "fleetspeak.server.StreamClientIdsResponse"],
      ["ListClientContacts", "unary", "fleetspeak.server.ListClientContactsRequest", "fleetspeak.server.ListClientContactsResponse"],
      [
        "StreamClientContacts",
        "server_streaming",
        "fleetspeak.server.StreamClientContactsRequest",
        "fleetspeak.server.StreamClientContactsResponse",
      ],
      ["GetMessageStatus", "unary", "fleetspeak.server.GetMessageStatusRequest", "fleetspeak.server.GetMessageStatusResponse"],
      ["InsertMessage", "unary", "fleetspeak.Message", "fleetspeak.EmptyMessage"],
      ["DeletePendingMessages", "unary", "fleetspeak.server.DeletePendingMessagesRequest", "fleetspeak.EmptyMessage"],
      ["GetPendingMessages", "unary", "fleetspeak.server.GetPendingMessagesRequest", "fleetspeak.server.GetPendingMessagesResponse"],
      [
        "GetPendingMessageCount",
        "unary",
        "fleetspeak.server.GetPendingMessageCountRequest",
        "fleetspeak.server.GetPendingMessageCountResponse",
      ],
      ["StoreFile", "unary", "fleetspeak.server.StoreFileRequest", "fleetspeak.EmptyMessage"],
      ["DeleteFile", "unary", "fleetspeak.server.DeleteFileRequest", "fleetspeak.EmptyMessage"],
      ["KeepAlive", "unary", "fleetspeak.EmptyMessage", "fleetspeak.EmptyMessage"],
      ["BlacklistClient", "unary", "fleetspeak.server.BlacklistClientRequest", "fleetspeak.EmptyMessage"],
      [
        "FetchClientResourceUsageRecords",
        "unary",
        "fleetspeak.server.FetchClientResourceUsageRecordsRequest",
        "fleetspeak.server.FetchClientResourceUsageRecordsResponse",
      ],
    ];
    assert.deepEqual(
      Admin.methods.map((m) => [m.name, m.methodKind, m.input.typeName, m.output.typeName]),
      expected,
    );
  });
});

describe("fleetspeak.components", () => {
  const modes = [
    ["mtlsConfig", MTlsConfigSchema, {}, "3a00"],
    ["httpsHeaderConfig", HttpsHeaderConfigSchema, { clientCertificateHeader: "x" }, "42030a0178"],
    [
      "httpsHeaderChecksumConfig",
      HttpsHeaderChecksumConfigSchema,
      { clientCertificateHeader: "x", clientCertificateChecksumHeader: "y" },
      "4a060a0178120179",
    ],
    ["cleartextHeaderConfig", CleartextHeaderConfigSchema, { clientCertificateHeader: "x" }, "52030a0178"],
    [
      "cleartextHeaderChecksumConfig",
      CleartextHeaderChecksumConfigSchema,
      { clientCertificateHeader: "x", clientCertificateChecksumHeader: "y" },
      "5a060a0178120179",
    ],
    ["cleartextXfccConfig", CleartextXfccConfigSchema, { clientCertificateHeader: "x" }, "62030a0178"],
  ] as const;

  for (const [mode, schema, value, expected] of modes) {
    it(`frontend mode ${mode}: round trip and tag`, () => {
      const frontendMode = { case: mode, value } as MessageInitShape<typeof FrontendConfigSchema>["frontendMode"];
      roundtrip(FrontendConfigSchema, { frontendMode });
      roundtrip(HttpsConfigSchema, { ...fullHttpsConfig, frontendConfig: { frontendMode } });
      roundtrip(schema as DescMessage, value as never);
      golden(FrontendConfigSchema, { frontendMode }, expected);
    });
  }

  it("round-trips Config and its parts", () => {
    roundtrip(ComponentsConfigSchema, fullComponentsConfig);
    roundtrip(HttpsConfigSchema, fullHttpsConfig);
    roundtrip(SpannerConfigSchema, fullComponentsConfig.spannerConfig!);
    roundtrip(AdminConfigSchema, fullComponentsConfig.adminConfig!);
    roundtrip(ConsoleConfigSchema, fullComponentsConfig.adminConfig!.console!);
    roundtrip(FrontendLimitsSchema, fullHttpsConfig.limits!);
    roundtrip(StatsConfigSchema, { address: "a" });
    roundtrip(HealthCheckConfigSchema, { listenAddress: "a" });
  });

  it("field numbers", () => {
    golden(ComponentsConfigSchema, { mysqlDataSourceName: "m", proxyProtocol: true, requiredLabel: "l" }, "0a016d 1801 22016c");
    golden(ComponentsConfigSchema, { notificationListenAddress: "a", notificationPublicAddress: "b" }, "2a0161 320162");
    golden(ComponentsConfigSchema, { adminConfig: { listenAddress: "a" } }, "3a030a0161");
    golden(ComponentsConfigSchema, { statsConfig: { address: "a" }, healthCheckConfig: { listenAddress: "b" } }, "42030a0161 4a030a0162");
    golden(ComponentsConfigSchema, { notificationUseHttpNotifier: true, spannerConfig: { pubsubSub: "s" } }, "5001 5a032a0173");
    golden(ComponentsConfigSchema, { httpsConfig: { listenAddress: "a" } }, "12030a0161");
    golden(HttpsConfigSchema, { certificates: "c", key: "k", disableStreaming: true }, "120163 1a016b 2001");
    golden(HttpsConfigSchema, { frontendConfig: { frontendMode: { case: "mtlsConfig", value: {} } } }, "3a023a00");
    golden(HttpsConfigSchema, { enableFileServerAuthorization: true }, "4001");
    golden(SpannerConfigSchema, { projectId: "p", instanceName: "i", databaseName: "d", pubsubTopic: "t" }, "0a0170 120169 1a0164 220174");
    assert.deepEqual(reservedTags(HttpsConfigSchema), [5, 6]);
  });

  it("field numbers of this implementation's own fields (from 100 on)", () => {
    golden(ComponentsConfigSchema, { notificationSharedSecret: ["a", "b"] }, "a2060161 a2060162");
    golden(ComponentsConfigSchema, { notificationWithoutMessages: true }, "a80601");
    golden(ComponentsConfigSchema, { workerProcesses: 4 }, "b00604");
    golden(ComponentsConfigSchema, { workerNotificationPort: 10001 }, "b806914e");
    golden(AdminConfigSchema, { tlsCertificates: "c", tlsKey: "k", clientCaCertificates: "a" }, "a2060163 aa06016b b2060161");
    golden(AdminConfigSchema, { console: { listenAddress: "a", loginSecret: ["s"] } }, "ba0606 0a0161 120173");
    golden(HttpsConfigSchema, { limits: { maxConnections: 1 } }, "a206020801");
    golden(FrontendLimitsSchema, { maxConnections: 1, maxPendingConnections: 2, maxBufferedRequestBytes: 3n, maxStreamFramesPerSecond: 4 }, "0801 1002 1803 2004");
    golden(GrpcConfigSchema, { clientCertificateFile: "c", clientKeyFile: "k" }, "a2060163 aa06016b");
  });
});

describe("fleetspeak.grpcservice and fleetspeak.cpsservice", () => {
  it("round trip and field numbers", () => {
    roundtrip(GrpcConfigSchema, {
      target: "localhost:1337",
      insecure: true,
      certFile: "/etc/ca.pem",
      clientCertificateFile: "/etc/fs.pem",
      clientKeyFile: "/etc/fs.key",
    });
    roundtrip(CpsConfigSchema, { project: "p", topic: "t" });
    golden(GrpcConfigSchema, { target: "t", insecure: true, certFile: "c" }, "0a0174 1001 1a0163");
    golden(CpsConfigSchema, { project: "p", topic: "t" }, "0a0170 120174");
    assert.equal(GrpcConfigSchema.typeName, "fleetspeak.grpcservice.Config");
  });

  it("Processor.Process takes a Message and returns EmptyMessage", () => {
    assert.equal(Processor.typeName, "fleetspeak.grpcservice.Processor");
    assert.deepEqual(
      Processor.methods.map((m) => [m.name, m.methodKind, m.input.typeName, m.output.typeName]),
      [["Process", "unary", "fleetspeak.Message", "fleetspeak.EmptyMessage"]],
    );
  });
});

describe("fleetspeak.client config, state and API", () => {
  it("round trip", () => {
    roundtrip(CommunicatorConfigSchema, {
      maxPollDelaySeconds: 300,
      maxBufferDelaySeconds: 5,
      minFailureDelaySeconds: 300,
      failureSuicideTimeSeconds: 604800,
      compression: CompressionAlgorithm.COMPRESSION_DEFLATE,
      preferHttp2: true,
    });
    roundtrip(ClientStateSchema, { clientKey: unhex("3077"), sequencingNonce: 99n, revokedCertSerials: [unhex("01")] });
    roundtrip(ByteBlobSchema, { data: unhex("00ff") });
    roundtrip(APIMessageSchema, { type: "t", data: payload });
  });

  it("field numbers", () => {
    golden(CommunicatorConfigSchema, { maxPollDelaySeconds: 1, maxBufferDelaySeconds: 2 }, "1001 1802");
    golden(CommunicatorConfigSchema, { minFailureDelaySeconds: 3, failureSuicideTimeSeconds: 4 }, "2003 2804");
    golden(CommunicatorConfigSchema, { compression: CompressionAlgorithm.COMPRESSION_DEFLATE, preferHttp2: true }, "3001 3801");
    golden(ClientStateSchema, { clientKey: unhex("01"), sequencingNonce: 2n, revokedCertSerials: [unhex("03")] }, "0a0101 3802 420103");
    golden(ByteBlobSchema, { data: unhex("01") }, "0a0101");
    golden(APIMessageSchema, { type: "t", data: { typeUrl: "u" } }, "0a0174 12030a0175");
  });
});

describe("fleetspeak.client.generic", () => {
  const base = {
    trustedCerts: "-----BEGIN CERTIFICATE-----",
    server: ["fs.example.com:4443"],
    clientLabel: ["lab"],
    streaming: true,
    proxy: "http://proxy:3128",
    clientCertificateHeader: "ssl-client-cert",
    serverName: "fs.example.com",
  };

  it("round trip with each persistence handler", () => {
    const fs = { configurationDirectory: "/etc/fleetspeak-client", stateFile: "/var/lib/misc/fleetspeak-client.state" };
    const reg = { configurationKey: "HKEY_LOCAL_MACHINE\\SOFTWARE\\FleetspeakClient" };
    roundtrip(GenericConfigSchema, { ...base, persistenceHandler: { case: "filesystemHandler", value: fs } });
    roundtrip(GenericConfigSchema, { ...base, persistenceHandler: { case: "registryHandler", value: reg } });
    roundtrip(FilesystemHandlerSchema, fs);
    roundtrip(RegistryHandlerSchema, reg);
  });

  it("field numbers", () => {
    golden(GenericConfigSchema, { trustedCerts: "t", server: ["s"], clientLabel: ["l"] }, "0a0174 120173 1a016c");
    golden(
      GenericConfigSchema,
      { persistenceHandler: { case: "filesystemHandler", value: { configurationDirectory: "d", stateFile: "s" } } },
      "22060a0164120173",
    );
    golden(GenericConfigSchema, { persistenceHandler: { case: "registryHandler", value: { configurationKey: "k" } } }, "2a030a016b");
    golden(GenericConfigSchema, { streaming: true, proxy: "p" }, "3001 3a0170");
    golden(GenericConfigSchema, { clientCertificateHeader: "h", serverName: "n" }, "420168 4a016e");
  });
});

describe("fleetspeak.daemonservice", () => {
  it("round trip", () => {
    const stdParams = { serviceName: "GRR", flushBytes: 1024, flushTimeSeconds: 10 };
    roundtrip(DaemonConfigSchema, {
      argv: ["/usr/bin/python3", "-m", "grr_response_client.grr_fs_client"],
      inactivityTimeout: duration,
      lazyStart: true,
      disableResourceMonitoring: true,
      resourceMonitoringSampleSize: 20,
      resourceMonitoringSamplePeriodSeconds: 30,
      resourceMonitoringSamplePeriod: duration,
      memoryLimit: 2147483648n,
      monitorHeartbeats: true,
      heartbeatUnresponsiveGracePeriodSeconds: 600,
      heartbeatUnresponsiveGracePeriod: duration,
      heartbeatUnresponsiveKillPeriodSeconds: 120,
      heartbeatUnresponsiveKillPeriod: duration,
      stdParams,
    });
    roundtrip(Config_StdParamsSchema, stdParams);
    roundtrip(StdOutputDataSchema, { pid: 10n, messageIndex: 2n, stdout: unhex("61"), stderr: unhex("62") });
  });

  it("field numbers", () => {
    golden(DaemonConfigSchema, { argv: ["a"], inactivityTimeout: { seconds: 1n }, lazyStart: true }, "0a0161 12020801 1801");
    golden(DaemonConfigSchema, { disableResourceMonitoring: true, resourceMonitoringSampleSize: 5 }, "2001 2805");
    golden(DaemonConfigSchema, { resourceMonitoringSamplePeriodSeconds: 1, memoryLimit: 2n, monitorHeartbeats: true }, "3001 3802 4001");
    golden(DaemonConfigSchema, { heartbeatUnresponsiveGracePeriodSeconds: 1, heartbeatUnresponsiveKillPeriodSeconds: 2 }, "4801 5002");
    golden(DaemonConfigSchema, { stdParams: { serviceName: "s", flushBytes: 1, flushTimeSeconds: 2 } }, "5a070a017310011802");
    golden(
      DaemonConfigSchema,
      {
        resourceMonitoringSamplePeriod: { seconds: 1n },
        heartbeatUnresponsiveGracePeriod: { seconds: 2n },
        heartbeatUnresponsiveKillPeriod: { seconds: 3n },
      },
      "62020801 6a020802 72020803",
    );
    golden(StdOutputDataSchema, { pid: 1n, messageIndex: 2n, stdout: unhex("61"), stderr: unhex("62") }, "0801 1002 1a0161 220162");
    const deprecated = DaemonConfigSchema.fields.filter((f) => f.deprecated).map((f) => f.number);
    assert.deepEqual(deprecated, [6, 9, 10]);
  });
});

describe("fleetspeak.socketservice, stdinservice and channel", () => {
  it("round trip", () => {
    roundtrip(SocketConfigSchema, {
      apiProxyPath: "/var/run/fs.sock",
      disableResourceMonitoring: true,
      resourceMonitoringSampleSize: 20,
      resourceMonitoringSamplePeriodSeconds: 30,
    });
    roundtrip(StdinConfigSchema, { cmd: "/bin/cat", args: ["-u"], logLevel: LogLevel.STDERR });
    roundtrip(InputMessageSchema, { input: unhex("6869"), args: ["-n"] });
    roundtrip(OutputMessageSchema, { stdout: unhex("61"), stderr: unhex("62"), timestamp: ts });
    roundtrip(StartupDataSchema, { pid: 123n, version: "0.1" });
  });

  it("field numbers", () => {
    golden(SocketConfigSchema, { apiProxyPath: "p", disableResourceMonitoring: true }, "0a0170 1001");
    golden(SocketConfigSchema, { resourceMonitoringSampleSize: 3, resourceMonitoringSamplePeriodSeconds: 4 }, "1803 2004");
    golden(StdinConfigSchema, { cmd: "c", args: ["a"], logLevel: LogLevel.ALL }, "0a0163 120161 1802");
    golden(InputMessageSchema, { input: unhex("01"), args: ["a"] }, "0a0101 120161");
    golden(OutputMessageSchema, { stdout: unhex("01"), stderr: unhex("02"), timestamp: { seconds: 1n } }, "0a0101 120102 22020801");
    assert.deepEqual(reservedTags(OutputMessageSchema), [3]);
    golden(StartupDataSchema, { pid: 1n, version: "v" }, "0801 120176");
  });
});

describe("fleetspeak.config (configurator)", () => {
  it("round trip and field numbers", () => {
    roundtrip(ConfiguratorConfigSchema, {
      configurationName: "test",
      componentsConfig: fullComponentsConfig,
      trustedCertFile: "/etc/fs/ca.pem",
      trustedCertKeyFile: "/etc/fs/ca.key",
      serverCertFile: "/etc/fs/server.pem",
      serverCertKeyFile: "/etc/fs/server.key",
      serverComponentConfigurationFile: "/etc/fs/server.components.config",
      publicHostPort: ["fs.example.com:4443"],
      linuxClientConfigurationFile: "/tmp/linux.config",
      darwinClientConfigurationFile: "/tmp/darwin.config",
      windowsClientConfigurationFile: "/tmp/windows.config",
      serverName: "fs.example.com",
      proxy: "http://proxy:3128",
      distributed: {
        outputDirectory: "/etc/fs/distributed",
        frontend: [{ name: "frontend-1", host: "frontend-1.internal", listenIp: "10.0.0.1" }],
        adminServer: [{ name: "admin-1", host: "admin-1.internal", listenIp: "10.0.0.2" }],
        servicesConfig: {
          services: [
            {
              name: "GRR",
              factory: "GRPC",
              maxParallelism: 5,
              config: anyPack(GrpcConfigSchema, create(GrpcConfigSchema, { target: "grr:11111", insecure: true })),
            },
          ],
          broadcastPollTime: { seconds: 1n },
        },
        clientsBalancerAddress: ":4443",
        adminBalancerAddress: ":4444",
      },
    });
    golden(ConfiguratorConfigSchema, { configurationName: "n", componentsConfig: { requiredLabel: "l" } }, "0a016e 120322016c");
    golden(ConfiguratorConfigSchema, { trustedCertFile: "a", trustedCertKeyFile: "b" }, "1a0161 220162");
    golden(ConfiguratorConfigSchema, { serverCertFile: "a", serverCertKeyFile: "b", serverComponentConfigurationFile: "c" }, "2a0161 320162 3a0163");
    golden(ConfiguratorConfigSchema, { publicHostPort: ["h:1"], linuxClientConfigurationFile: "l" }, "4203683a31 4a016c");
    golden(ConfiguratorConfigSchema, { darwinClientConfigurationFile: "d", windowsClientConfigurationFile: "w" }, "520164 5a0177");
    golden(ConfiguratorConfigSchema, { serverName: "s", proxy: "p" }, "620173 6a0170");
    // Our own field (100) and messages.
    golden(ConfiguratorConfigSchema, { distributed: { outputDirectory: "o" } }, "a20603 0a016f");
    golden(DistributedSchema, { frontend: [{ name: "f" }], adminServer: [{ name: "a" }] }, "1203 0a0166 1a03 0a0161");
    golden(DistributedSchema, { servicesConfig: {}, clientsBalancerAddress: "c", adminBalancerAddress: "a" }, "2200 2a0163 320161");
    golden(MachineSchema, { name: "n", host: "h", listenIp: "i" }, "0a016e 120168 1a0169");
  });
});

describe("coverage", () => {
  function allMessages(): DescMessage[] {
    const out: DescMessage[] = [];
    const visit = (m: DescMessage) => {
      out.push(m);
      m.nestedMessages.forEach(visit);
    };
    for (const file of ALL_FILES) file.messages.forEach(visit);
    return out;
  }

  it("has the upstream package and message names", () => {
    const names = allMessages()
      .map((m) => m.typeName)
      .sort();
    assert.deepEqual(names, [...EXPECTED_TYPE_NAMES].sort());
  });

  // Runs last in file order: every message type must have been seen fully populated above.
  it("round-tripped every message type fully populated", () => {
    const missing = allMessages()
      .map((m) => m.typeName)
      .filter((n) => !populated.has(n));
    assert.deepEqual(missing, [], "message types without a fully populated round trip");
  });
});

const EXPECTED_TYPE_NAMES = [
  "fleetspeak.Address",
  "fleetspeak.ValidationInfo",
  "fleetspeak.Message",
  "fleetspeak.MessageResult",
  "fleetspeak.Annotations",
  "fleetspeak.Annotations.Entry",
  "fleetspeak.Label",
  "fleetspeak.Signature",
  "fleetspeak.WrappedContactData",
  "fleetspeak.ContactData",
  "fleetspeak.EmptyMessage",
  "fleetspeak.MessageAckData",
  "fleetspeak.MessageErrorData",
  "fleetspeak.ClientInfoData",
  "fleetspeak.ClientInfoData.ServiceID",
  "fleetspeak.RemoveServiceData",
  "fleetspeak.SignedClientServiceConfig",
  "fleetspeak.ClientServiceConfig",
  "fleetspeak.ClientServiceConfigs",
  "fleetspeak.RevokedCertificateList",
  "fleetspeak.DieRequest",
  "fleetspeak.RestartServiceRequest",
  "fleetspeak.monitoring.AggregatedResourceUsage",
  "fleetspeak.monitoring.ResourceUsageData",
  "fleetspeak.monitoring.KillNotification",
  "fleetspeak.server.CreateBroadcastRequest",
  "fleetspeak.server.ListActiveBroadcastsRequest",
  "fleetspeak.server.ListActiveBroadcastsResponse",
  "fleetspeak.server.DisableBroadcastsRequest",
  "fleetspeak.server.ListClientsRequest",
  "fleetspeak.server.ListClientsResponse",
  "fleetspeak.server.StreamClientIdsRequest",
  "fleetspeak.server.StreamClientIdsResponse",
  "fleetspeak.server.Client",
  "fleetspeak.server.GetMessageStatusRequest",
  "fleetspeak.server.DeletePendingMessagesRequest",
  "fleetspeak.server.GetPendingMessagesRequest",
  "fleetspeak.server.GetPendingMessagesResponse",
  "fleetspeak.server.GetPendingMessageCountRequest",
  "fleetspeak.server.GetPendingMessageCountResponse",
  "fleetspeak.server.GetMessageStatusResponse",
  "fleetspeak.server.StoreFileRequest",
  "fleetspeak.server.DeleteFileRequest",
  "fleetspeak.server.ListClientContactsRequest",
  "fleetspeak.server.ListClientContactsResponse",
  "fleetspeak.server.StreamClientContactsRequest",
  "fleetspeak.server.StreamClientContactsResponse",
  "fleetspeak.server.ClientContact",
  "fleetspeak.server.BlacklistClientRequest",
  "fleetspeak.server.FetchClientResourceUsageRecordsRequest",
  "fleetspeak.server.FetchClientResourceUsageRecordsResponse",
  "fleetspeak.server.Broadcast",
  "fleetspeak.server.ClientResourceUsageRecord",
  "fleetspeak.server.ServerConfig",
  "fleetspeak.server.ServiceConfig",
  "fleetspeak.components.Config",
  "fleetspeak.components.SpannerConfig",
  "fleetspeak.components.MTlsConfig",
  "fleetspeak.components.HttpsHeaderConfig",
  "fleetspeak.components.HttpsHeaderChecksumConfig",
  "fleetspeak.components.CleartextHeaderConfig",
  "fleetspeak.components.CleartextHeaderChecksumConfig",
  "fleetspeak.components.CleartextXfccConfig",
  "fleetspeak.components.FrontendConfig",
  "fleetspeak.components.HttpsConfig",
  "fleetspeak.components.AdminConfig",
  "fleetspeak.components.ConsoleConfig",
  "fleetspeak.components.FrontendLimits",
  "fleetspeak.components.StatsConfig",
  "fleetspeak.components.HealthCheckConfig",
  "fleetspeak.grpcservice.Config",
  "fleetspeak.cpsservice.Config",
  "fleetspeak.client.CommunicatorConfig",
  "fleetspeak.client.ClientState",
  "fleetspeak.client.ByteBlob",
  "fleetspeak.client.APIMessage",
  "fleetspeak.client.generic.Config",
  "fleetspeak.client.generic.FilesystemHandler",
  "fleetspeak.client.generic.RegistryHandler",
  "fleetspeak.daemonservice.Config",
  "fleetspeak.daemonservice.Config.StdParams",
  "fleetspeak.daemonservice.StdOutputData",
  "fleetspeak.socketservice.Config",
  "fleetspeak.stdinservice.Config",
  "fleetspeak.stdinservice.InputMessage",
  "fleetspeak.stdinservice.OutputMessage",
  "fleetspeak.channel.StartupData",
  "fleetspeak.config.Config",
  "fleetspeak.config.Distributed",
  "fleetspeak.config.Machine",
];
