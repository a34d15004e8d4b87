// What both backends share: checking what a caller hands in, and turning protobuf messages into
// column values and rows back into protobuf messages. Column names and encodings follow
// Fleetspeak's MySQL schema (see schema notes in mysql-schema.ts).
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AnySchema, type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import {
  AddressSchema,
  AnnotationsSchema,
  type Label,
  LabelSchema,
  type Message,
  type MessageResult,
  MessageResultSchema,
  MessageSchema,
  ValidationInfoSchema,
} from "../../gen/fleetspeak/common_pb.js";
import type { ResourceUsageData } from "../../gen/fleetspeak_monitoring/resource_pb.js";
import { type Client, ClientContactSchema, ClientSchema } from "../../gen/fleetspeak_server/admin_pb.js";
import type { ClientContact } from "../../gen/fleetspeak_server/admin_pb.js";
import { type Broadcast, BroadcastSchema } from "../../gen/fleetspeak_server/broadcasts_pb.js";
import {
  type ClientResourceUsageRecord,
  ClientResourceUsageRecordSchema,
} from "../../gen/fleetspeak_server/resource_pb.js";
import { InvalidArgumentError } from "./errors.js";
import { MAX_STORED_PAYLOAD_BYTES } from "./store.js";

/** Integers come back as number (mysql2), decimal string (mysql2 BIGINT) or bigint (SQLite). */
export type DbInt = number | bigint | string;
export type DbBytes = Uint8Array | null;

/** Longest service name, message type or label: the VARCHAR(128) columns of the schema. */
export const MAX_NAME_CHARS = 128;
/** Longest source_message_id kept (Fleetspeak's column is VARBINARY(16); ours is wider). */
export const MAX_SOURCE_MESSAGE_ID_BYTES = 255;
export const REMOVED_BY_ADMIN = "Removed by admin action.";

export function buf(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

export function hex(b: Uint8Array): string {
  return buf(b).toString("hex");
}

export function num(v: DbInt): number {
  return typeof v === "number" ? v : Number(v);
}

export function big(v: DbInt): bigint {
  return typeof v === "bigint" ? v : BigInt(v);
}

function optNum(v: DbInt | null): number | undefined {
  return v === null ? undefined : num(v);
}

// ---- time ----

export function msToNs(ms: number): bigint {
  return BigInt(Math.round(ms * 1000)) * 1000n;
}

export function nsToMs(ns: DbInt): number {
  return Number(big(ns) / 1000000n);
}

/** pending_messages.scheduled_time is in microseconds, as Fleetspeak's. */
export function msToUs(ms: number): number {
  return Math.round(ms * 1000);
}

export function nsToTimestamp(ns: DbInt): Timestamp {
  const n = big(ns);
  let seconds = n / 1000000000n;
  let nanos = Number(n % 1000000000n);
  if (nanos < 0) {
    seconds -= 1n;
    nanos += 1000000000;
  }
  return create(TimestampSchema, { seconds, nanos });
}

export function timestampToNs(t: { seconds: bigint; nanos: number }): bigint {
  return t.seconds * 1000000000n + BigInt(t.nanos);
}

export function msToTimestamp(ms: number): Timestamp {
  return nsToTimestamp(msToNs(ms));
}

/** Fleetspeak's ServerRetryTime(0): first retry of a server-bound message after 1–2 minutes. */
export function defaultServerDueMs(now: number): number {
  return now + 60_000 * (1 + Math.random());
}

// ---- nonces: uint64 little-endian, 8 bytes ----

export function nonceToBytes(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, n));
  return b;
}

export function nonceFromBytes(b: Uint8Array): bigint {
  return buf(b).readBigUInt64LE(0);
}

// ---- argument checks ----

export function checkId(id: Uint8Array, bytes: number, what: string): void {
  if (id.length !== bytes) {
    throw new InvalidArgumentError(`${what} must be ${bytes} bytes, got ${id.length}`);
  }
}

export function checkClientId(id: Uint8Array, what = "client ID"): void {
  checkId(id, 8, what);
}

export function checkName(value: string, what: string): void {
  if (value.length > MAX_NAME_CHARS) {
    throw new InvalidArgumentError(`${what} is ${value.length} characters long; at most ${MAX_NAME_CHARS} are stored`);
  }
}

export function checkPayloadSize(bytes: number, what: string): void {
  if (bytes > MAX_STORED_PAYLOAD_BYTES) {
    throw new InvalidArgumentError(
      `${what} is ${bytes} bytes, over the ${MAX_STORED_PAYLOAD_BYTES}-byte limit of the datastore; send smaller payloads`,
    );
  }
}

// ---- messages ----

/** Column values of one message, in the order of MESSAGE_COLUMNS, plus its pending fields. */
export interface MessageRow {
  id: Buffer;
  values: MessageValues;
  forServer: boolean;
  destinationClientId: Buffer;
  destinationService: string;
  dataTypeUrl: string | null;
  dataValue: Buffer | null;
  /** undefined: no result; otherwise success or failure. */
  result: "success" | "failed" | undefined;
}

export type MessageValues = [
  message_id: Buffer,
  source_client_id: Buffer | null,
  source_service_name: string,
  source_message_id: Buffer | null,
  destination_client_id: Buffer | null,
  destination_service_name: string,
  message_type: string,
  creation_time_seconds: number,
  creation_time_nanos: number,
  processed_time_seconds: number | null,
  processed_time_nanos: number | null,
  validation_info: Buffer | null,
  failed: number | null,
  failed_reason: string | null,
  annotations: Buffer | null,
];

export const MESSAGE_COLUMNS =
  "message_id, source_client_id, source_service_name, source_message_id, destination_client_id, " +
  "destination_service_name, message_type, creation_time_seconds, creation_time_nanos, " +
  "processed_time_seconds, processed_time_nanos, validation_info, failed, failed_reason, annotations";

/** MESSAGE_COLUMNS qualified with a table alias, for joins. */
export function messageColumns(alias: string): string {
  return MESSAGE_COLUMNS.split(", ")
    .map((c) => `${alias}.${c}`)
    .join(", ");
}

export interface MessageDbRow {
  message_id: Uint8Array;
  source_client_id: DbBytes;
  source_service_name: string;
  source_message_id: DbBytes;
  destination_client_id: DbBytes;
  destination_service_name: string;
  message_type: string | null;
  creation_time_seconds: DbInt;
  creation_time_nanos: DbInt;
  processed_time_seconds: DbInt | null;
  processed_time_nanos: DbInt | null;
  validation_info: DbBytes;
  failed: DbInt | null;
  failed_reason: string | null;
  annotations: DbBytes;
  data_type_url?: string | null;
  data_value?: DbBytes;
}

/** Checks one message and turns it into column values; throws InvalidArgumentError. */
export function toMessageRow(m: Message, nowMs: number): MessageRow {
  const idHex = hex(m.messageId);
  if (m.messageId.length !== 32) {
    throw new InvalidArgumentError(`message_id must be 32 bytes, got ${m.messageId.length}`);
  }
  const where = `message ${idHex}`;
  if (!m.source) throw new InvalidArgumentError(`${where} has no source`);
  if (!m.destination) throw new InvalidArgumentError(`${where} has no destination`);
  if (!m.creationTime) throw new InvalidArgumentError(`${where}: creation_time must be set`);
  const src = m.source;
  const dst = m.destination;
  if (src.clientId.length !== 0) checkClientId(src.clientId, `${where}: source.client_id`);
  if (dst.clientId.length !== 0) checkClientId(dst.clientId, `${where}: destination.client_id`);
  checkName(src.serviceName, `${where}: source.service_name`);
  checkName(dst.serviceName, `${where}: destination.service_name`);
  checkName(m.messageType, `${where}: message_type`);
  if (m.sourceMessageId.length > MAX_SOURCE_MESSAGE_ID_BYTES) {
    throw new InvalidArgumentError(
      `${where}: source_message_id is ${m.sourceMessageId.length} bytes; at most ${MAX_SOURCE_MESSAGE_ID_BYTES} are stored`,
    );
  }
  if (m.data) checkPayloadSize(m.data.value.length, `${where}: payload`);

  const r = m.result;
  let processed: Timestamp | undefined;
  if (r) processed = r.processedTime ?? msToTimestamp(nowMs);
  const id = buf(m.messageId);
  return {
    id,
    values: [
      id,
      src.clientId.length ? buf(src.clientId) : null,
      src.serviceName,
      m.sourceMessageId.length ? buf(m.sourceMessageId) : null,
      dst.clientId.length ? buf(dst.clientId) : null,
      dst.serviceName,
      m.messageType,
      Number(m.creationTime.seconds),
      m.creationTime.nanos,
      processed ? Number(processed.seconds) : null,
      processed ? processed.nanos : null,
      m.validationInfo ? buf(toBinary(ValidationInfoSchema, m.validationInfo)) : null,
      r?.failed ? 1 : null,
      r?.failed ? r.failedReason : null,
      m.annotations ? buf(toBinary(AnnotationsSchema, m.annotations)) : null,
    ],
    forServer: dst.clientId.length === 0,
    destinationClientId: buf(dst.clientId),
    destinationService: dst.serviceName,
    dataTypeUrl: m.data ? m.data.typeUrl : null,
    dataValue: m.data ? buf(m.data.value) : null,
    result: r === undefined ? undefined : r.failed ? "failed" : "success",
  };
}

/** The messages columns a carried copy must match, and their index in MessageRow.values. */
const CARRIED_MATCHED_COLUMNS: [column: string, index: number][] = [
  ["source_client_id", 1],
  ["source_service_name", 2],
  ["source_message_id", 3],
  ["destination_client_id", 4],
  ["destination_service_name", 5],
  ["message_type", 6],
  ["creation_time_seconds", 7],
  ["creation_time_nanos", 8],
  ["validation_info", 11],
  ["annotations", 14],
];

/**
 * The WHERE clause of a carried-message lease on pending_messages `p` and messages `m`, with the
 * dialect's NULL-safe equality (MySQL `<=>`, SQLite `IS`); its parameters: carriedLeaseParams.
 */
export function carriedLeaseWhere(p: string, m: string, eq: "<=>" | "IS"): string {
  return [
    `${p}.message_id = ? AND ${p}.destination_client_id = ? AND ${p}.scheduled_time <= ?`,
    `${p}.data_type_url ${eq} ? AND ${p}.data_value ${eq} ? AND ${m}.processed_time_seconds IS NULL`,
    ...CARRIED_MATCHED_COLUMNS.map(([c]) => `${m}.${c} ${eq} ?`),
  ].join(" AND ");
}

/**
 * The due times (µs, exclusive start, inclusive end) of leases taken less than `recentMs` before
 * `nowMs` with a lease of `leaseMs` (releaseRecentLeases); the end allows for the microseconds a
 * lease stamp adds.
 */
export function recentLeaseRange(nowMs: number, o: { leaseMs: number; recentMs: number }): [number, number] {
  return [msToUs(nowMs - o.recentMs + o.leaseMs), msToUs(nowMs + o.leaseMs + 1)];
}

/** The parameters of carriedLeaseWhere for one carried message. */
export function carriedLeaseParams(row: MessageRow, nowUs: number): unknown[] {
  return [
    row.id,
    row.destinationClientId,
    nowUs,
    row.dataTypeUrl,
    row.dataValue,
    ...CARRIED_MATCHED_COLUMNS.map(([, i]) => row.values[i]),
  ];
}

/**
 * The column values of a carried client-bound message (leaseCarriedMessages), or undefined when it
 * cannot be one: malformed, server-bound, or carrying a result.
 */
export function carriedRow(m: Message, nowMs: number): MessageRow | undefined {
  if (m.result || m.destination?.clientId.length !== 8) return undefined;
  try {
    return toMessageRow(m, nowMs);
  } catch {
    return undefined;
  }
}

/** processed_time and failure columns of a result. */
export function resultValues(
  r: MessageResult,
  nowMs: number,
): [seconds: number, nanos: number, failed: number | null, reason: string | null] {
  const t = r.processedTime ?? msToTimestamp(nowMs);
  return [Number(t.seconds), t.nanos, r.failed ? 1 : null, r.failed ? r.failedReason : null];
}

export function messageFromRow(row: MessageDbRow, wantData: boolean, wantResult = true): Message {
  const m = create(MessageSchema, {
    messageId: row.message_id,
    source: create(AddressSchema, {
      clientId: row.source_client_id ?? new Uint8Array(0),
      serviceName: row.source_service_name,
    }),
    sourceMessageId: row.source_message_id ?? new Uint8Array(0),
    destination: create(AddressSchema, {
      clientId: row.destination_client_id ?? new Uint8Array(0),
      serviceName: row.destination_service_name,
    }),
    messageType: row.message_type ?? "",
    creationTime: create(TimestampSchema, {
      seconds: big(row.creation_time_seconds),
      nanos: num(row.creation_time_nanos),
    }),
  });
  if (row.validation_info) m.validationInfo = fromBinary(ValidationInfoSchema, row.validation_info);
  if (row.annotations) m.annotations = fromBinary(AnnotationsSchema, row.annotations);
  if (wantResult && row.processed_time_seconds !== null) {
    m.result = resultFromRow(row);
  }
  if (wantData && row.data_type_url !== undefined && row.data_type_url !== null) {
    m.data = create(AnySchema, { typeUrl: row.data_type_url, value: row.data_value ?? new Uint8Array(0) });
  }
  return m;
}

export function resultFromRow(row: {
  processed_time_seconds: DbInt | null;
  processed_time_nanos: DbInt | null;
  failed: DbInt | null;
  failed_reason: string | null;
}): MessageResult | undefined {
  if (row.processed_time_seconds === null) return undefined;
  const failed = row.failed !== null && num(row.failed) !== 0;
  return create(MessageResultSchema, {
    processedTime: create(TimestampSchema, {
      seconds: big(row.processed_time_seconds),
      nanos: num(row.processed_time_nanos ?? 0),
    }),
    failed,
    failedReason: failed ? (row.failed_reason ?? "") : "",
  });
}

// ---- clients ----

export interface ClientDbRow {
  client_id: Uint8Array;
  blacklisted: DbInt;
  last_contact_time: DbInt;
  last_contact_address: string | null;
  last_contact_streaming_to: string | null;
  last_clock_seconds: DbInt | null;
  last_clock_nanos: DbInt | null;
}

export interface LabelDbRow {
  client_id: Uint8Array;
  service_name: string;
  label: string;
}

export function clientFromRow(row: ClientDbRow, labels: Label[]): Client {
  const c = create(ClientSchema, {
    clientId: row.client_id,
    labels,
    lastContactTime: nsToTimestamp(row.last_contact_time),
    lastContactAddress: row.last_contact_address ?? "",
    lastContactStreamingTo: row.last_contact_streaming_to ?? "",
    blacklisted: num(row.blacklisted) !== 0,
  });
  if (row.last_clock_seconds !== null) {
    c.lastClock = create(TimestampSchema, {
      seconds: big(row.last_clock_seconds),
      nanos: num(row.last_clock_nanos ?? 0),
    });
  }
  return c;
}

export function labelFromRow(row: { service_name: string; label: string }): Label {
  return create(LabelSchema, { serviceName: row.service_name, label: row.label });
}

/** Groups label rows by client (hex key). */
export function labelsByClient(rows: LabelDbRow[]): Map<string, Label[]> {
  const out = new Map<string, Label[]>();
  for (const r of rows) {
    const k = hex(r.client_id);
    let list = out.get(k);
    if (!list) {
      list = [];
      out.set(k, list);
    }
    list.push(labelFromRow(r));
  }
  return out;
}

export function checkLabel(label: Label): void {
  checkName(label.serviceName, "label service_name");
  checkName(label.label, "label");
}

export interface ContactDbRow {
  time: DbInt;
  sent_nonce: Uint8Array;
  received_nonce: Uint8Array;
  address: string | null;
}

export function contactFromRow(row: ContactDbRow): ClientContact {
  return create(ClientContactSchema, {
    sentNonce: nonceFromBytes(row.sent_nonce),
    receivedNonce: nonceFromBytes(row.received_nonce),
    observedAddress: row.address ?? "",
    timestamp: nsToTimestamp(row.time),
  });
}

/** Contact IDs are the client_contact_id in lowercase hex, as Fleetspeak's. */
export function contactIdToString(id: DbInt): string {
  return big(id).toString(16);
}

export function contactIdFromString(id: string): bigint {
  if (!/^[0-9a-f]{1,16}$/.test(id)) {
    throw new InvalidArgumentError(`contact ID ${JSON.stringify(id)} is not a contact ID returned by recordClientContact`);
  }
  return BigInt(`0x${id}`);
}

// ---- resource usage ----

export type ResourceUsageValues = [
  client_id: Buffer,
  scope: string,
  pid: bigint,
  process_start_time: bigint,
  client_timestamp: bigint,
  server_timestamp: bigint,
  process_terminated: number,
  mean_user_cpu_rate: number,
  max_user_cpu_rate: number,
  mean_system_cpu_rate: number,
  max_system_cpu_rate: number,
  mean_resident_memory_mib: number,
  max_resident_memory_mib: number,
  mean_num_fds: number,
  max_num_fds: number,
];

export const RESOURCE_USAGE_COLUMNS =
  "client_id, scope, pid, process_start_time, client_timestamp, server_timestamp, process_terminated, " +
  "mean_user_cpu_rate, max_user_cpu_rate, mean_system_cpu_rate, max_system_cpu_rate, " +
  "mean_resident_memory_mib, max_resident_memory_mib, mean_num_fds, max_num_fds";

const MIB = 1048576;

/** As Fleetspeak: memory in MiB truncated toward zero, fd mean truncated. */
export function resourceUsageValues(id: Uint8Array, d: ResourceUsageData, nowMs: number): ResourceUsageValues {
  if (!d.processStartTime) {
    throw new InvalidArgumentError("resource usage data has no process_start_time");
  }
  if (!d.dataTimestamp) throw new InvalidArgumentError("resource usage data has no data_timestamp");
  checkName(d.scope, "resource usage scope");
  const u = d.resourceUsage;
  return [
    buf(id),
    d.scope,
    d.pid,
    timestampToNs(d.processStartTime),
    timestampToNs(d.dataTimestamp),
    msToNs(nowMs),
    d.processTerminated ? 1 : 0,
    u?.meanUserCpuRate ?? 0,
    u?.maxUserCpuRate ?? 0,
    u?.meanSystemCpuRate ?? 0,
    u?.maxSystemCpuRate ?? 0,
    Math.trunc((u?.meanResidentMemory ?? 0) / MIB) | 0,
    Number((u?.maxResidentMemory ?? 0n) / BigInt(MIB)) | 0,
    Math.trunc(u?.meanNumFds ?? 0) | 0,
    u?.maxNumFds ?? 0,
  ];
}

export interface ResourceUsageDbRow {
  scope: string;
  pid: DbInt | null;
  process_start_time: DbInt | null;
  client_timestamp: DbInt | null;
  server_timestamp: DbInt | null;
  process_terminated: DbInt;
  mean_user_cpu_rate: number | null;
  max_user_cpu_rate: number | null;
  mean_system_cpu_rate: number | null;
  max_system_cpu_rate: number | null;
  mean_resident_memory_mib: DbInt | null;
  max_resident_memory_mib: DbInt | null;
  mean_num_fds: DbInt | null;
  max_num_fds: DbInt | null;
}

export function resourceUsageFromRow(r: ResourceUsageDbRow): ClientResourceUsageRecord {
  const rec = create(ClientResourceUsageRecordSchema, {
    scope: r.scope,
    pid: r.pid === null ? 0n : big(r.pid),
    processTerminated: num(r.process_terminated) !== 0,
    meanUserCpuRate: r.mean_user_cpu_rate ?? 0,
    maxUserCpuRate: r.max_user_cpu_rate ?? 0,
    meanSystemCpuRate: r.mean_system_cpu_rate ?? 0,
    maxSystemCpuRate: r.max_system_cpu_rate ?? 0,
    meanResidentMemoryMib: optNum(r.mean_resident_memory_mib) ?? 0,
    maxResidentMemoryMib: optNum(r.max_resident_memory_mib) ?? 0,
    meanNumFds: optNum(r.mean_num_fds) ?? 0,
    maxNumFds: optNum(r.max_num_fds) ?? 0,
  });
  if (r.process_start_time !== null) rec.processStartTime = nsToTimestamp(r.process_start_time);
  if (r.client_timestamp !== null) rec.clientTimestamp = nsToTimestamp(r.client_timestamp);
  if (r.server_timestamp !== null) rec.serverTimestamp = nsToTimestamp(r.server_timestamp);
  return rec;
}

// ---- broadcasts ----

export type BroadcastValues = [
  broadcast_id: Buffer,
  source_service_name: string,
  destination_service_name: string | null,
  message_type: string,
  expiration_time_seconds: number | null,
  expiration_time_nanos: number | null,
  data_type_url: string | null,
  data_value: Buffer | null,
  message_limit: bigint,
];

export const BROADCAST_COLUMNS =
  "broadcast_id, source_service_name, destination_service_name, message_type, expiration_time_seconds, " +
  "expiration_time_nanos, data_type_url, data_value, message_limit";

export function broadcastValues(b: Broadcast, limit: bigint): BroadcastValues {
  checkId(b.broadcastId, 8, "broadcast_id");
  const where = `broadcast ${hex(b.broadcastId)}`;
  if (!b.source) throw new InvalidArgumentError(`${where} must have a source`);
  if (b.groupName !== "") {
    throw new InvalidArgumentError(`${where}: broadcast replacement (group_name) is not supported by this datastore`);
  }
  if (limit < 0n) throw new InvalidArgumentError(`${where}: limit must not be negative`);
  checkName(b.source.serviceName, `${where}: source.service_name`);
  if (b.destination) checkName(b.destination.serviceName, `${where}: destination.service_name`);
  checkName(b.messageType, `${where}: message_type`);
  for (const l of b.requiredLabels) checkLabel(l);
  if (b.data) checkPayloadSize(b.data.value.length, `${where}: payload`);
  return [
    buf(b.broadcastId),
    b.source.serviceName,
    b.destination ? b.destination.serviceName : null,
    b.messageType,
    b.expirationTime ? Number(b.expirationTime.seconds) : null,
    b.expirationTime ? b.expirationTime.nanos : null,
    b.data ? b.data.typeUrl : null,
    b.data ? buf(b.data.value) : null,
    limit,
  ];
}

export interface BroadcastDbRow {
  broadcast_id: Uint8Array;
  source_service_name: string;
  destination_service_name: string | null;
  message_type: string;
  expiration_time_seconds: DbInt | null;
  expiration_time_nanos: DbInt | null;
  data_type_url: string | null;
  data_value: DbBytes;
  sent: DbInt;
  message_limit: DbInt;
}

export function broadcastFromRow(r: BroadcastDbRow, labels: Label[]): Broadcast {
  const b = create(BroadcastSchema, {
    broadcastId: r.broadcast_id,
    source: create(AddressSchema, { serviceName: r.source_service_name }),
    messageType: r.message_type,
    requiredLabels: labels,
  });
  if (r.destination_service_name !== null) {
    b.destination = create(AddressSchema, { serviceName: r.destination_service_name });
  }
  if (r.expiration_time_seconds !== null) {
    b.expirationTime = create(TimestampSchema, {
      seconds: big(r.expiration_time_seconds),
      nanos: num(r.expiration_time_nanos ?? 0),
    });
  }
  if (r.data_type_url !== null) {
    b.data = create(AnySchema, { typeUrl: r.data_type_url, value: r.data_value ?? new Uint8Array(0) });
  }
  return b;
}

/**
 * The broadcast condition of saveBroadcastMessage: room left under the limit after what was sent
 * and what Fleetspeak (Go) servers hold in allocations (broadcasts.allocated; always 0 where only
 * this server runs).
 */
export const BROADCAST_HAS_ROOM_SQL = "sent + allocated < message_limit";

/** The expiry test in SQL, with the current time as two parameters (seconds, nanos). */
export const NOT_EXPIRED_SQL =
  "(expiration_time_seconds IS NULL OR expiration_time_seconds > ? OR " +
  "(expiration_time_seconds = ? AND expiration_time_nanos > ?))";

export function notExpiredParams(nowMs: number): [number, number, number] {
  const t = msToTimestamp(nowMs);
  return [Number(t.seconds), Number(t.seconds), t.nanos];
}

/** The "created before" test used by pruning, with (seconds, seconds, nanos) parameters. */
export const CREATED_BEFORE_SQL =
  "(creation_time_seconds < ? OR (creation_time_seconds = ? AND creation_time_nanos < ?))";

/** The services that may still receive messages, with how many each; undefined = no per-service limit. */
export function serviceQuotas(limits: ReadonlyMap<string, number> | undefined): [string, number][] | undefined {
  if (limits === undefined) return undefined;
  const out: [string, number][] = [];
  for (const [svc, n] of limits) if (n > 0) out.push([svc, Math.floor(n)]);
  return out;
}
