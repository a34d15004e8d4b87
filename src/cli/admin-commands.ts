// The commands of fleetspeak-admin: each turns its arguments into Admin RPCs and the answer into a
// table for people and a JSON value for scripts (IDs in hex, times in RFC 3339).
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { create } from "@bufbuild/protobuf";
import {
  anyPack,
  type Any,
  AnySchema,
  BytesValueSchema,
  StringValueSchema,
  type Timestamp,
  timestampFromMs,
  timestampMs,
} from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import { bytesToHex, parseClientIdHex } from "../common/ids.js";
import { type Label, LabelSchema, type Message } from "../gen/fleetspeak/common_pb.js";
import type { Admin } from "../gen/fleetspeak_server/admin_pb.js";

/** A mistake in the command line: exit 2 with this line. */
export class UsageError extends Error {}

/** The server does not know what was asked about: exit 1 with this line. */
export class NotKnownError extends Error {}

export type AdminClient = Client<typeof Admin>;

export interface CommandFlags {
  data_text?: string;
  data_hex?: string;
  type_url?: string;
  source?: string;
  offset?: string;
  limit?: string;
  data?: boolean;
  labels?: string;
  expires?: string;
  since?: string;
}

export interface CommandOutput {
  /** What a person reads. */
  text: string;
  /** What --json prints. */
  json: unknown;
}

/** Each command flag: its value's name ("" for a switch) and what it does. */
const FLAG_HELP: Record<keyof CommandFlags, [string, string]> = {
  data_text: ["TEXT", "the payload, as text (a google.protobuf.StringValue; its bytes as they are with --type_url)"],
  data_hex: ["HEX", "the payload, as bytes in hex (a google.protobuf.BytesValue; the bytes as they are with --type_url)"],
  type_url: ["URL", "send the payload's bytes as they are, in a google.protobuf.Any of this type URL"],
  source: ["SERVICE", "the sending service (default: the destination service)"],
  offset: ["N", "skip the first N messages"],
  limit: ["N", "at most N messages"],
  data: ["", "show each message's payload type and size"],
  labels: ["L1,L2", "only clients with all these labels (client labels; service:label for labels of other services)"],
  expires: ["DURATION", "stop the broadcast after this long (e.g. 24h, 30m; default never)"],
  since: ["DURATION", "reports from this long ago until now (default 24h)"],
};

export interface Command {
  name: string;
  aliases?: string[];
  usage: string;
  summary: string;
  /** Command-specific flags it accepts. */
  flags: Array<keyof CommandFlags>;
  /** Where a flag means something else for this command than FLAG_HELP says. */
  flagHelp?: Partial<Record<keyof CommandFlags, string>>;
  minArgs: number;
  maxArgs?: number;
  run(admin: AdminClient, args: string[], flags: CommandFlags): Promise<CommandOutput>;
}

const BROADCAST_UNLIMITED = 9223372036854775807n;

function clientId(text: string): Uint8Array {
  try {
    const id = parseClientIdHex(text);
    if (id.length === 0) throw new Error("it is empty");
    return id;
  } catch (e) {
    throw new UsageError(
      `bad client id ${JSON.stringify(text)}: ${(e as Error).message}; a client id is 16 hex digits, as listclients prints it`,
    );
  }
}

function hexId(text: string, bytes: number, what: string): Uint8Array {
  if (!new RegExp(`^[0-9a-fA-F]{${2 * bytes}}$`).test(text)) {
    throw new UsageError(`bad ${what} ${JSON.stringify(text)}: it must be ${2 * bytes} hex digits`);
  }
  return Buffer.from(text, "hex");
}

function count(text: string | undefined, flag: string, fallback: bigint): bigint {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text)) throw new UsageError(`--${flag} must be a whole number, got ${JSON.stringify(text)}`);
  return BigInt(text);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Go-style durations: "90s", "30m", "1h30m", "7d". */
export function parseDuration(text: string, flag: string): number {
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== text) {
    throw new UsageError(`--${flag}: bad duration ${JSON.stringify(text)}; write it like 90s, 30m, 24h or 7d`);
  }
  return parts.reduce((ms, p) => ms + Number(p[1]) * DURATION_UNITS[p[2]!]!, 0);
}

/** The payload from --data_text / --data_hex / --type_url. */
function payload(flags: CommandFlags): Any | undefined {
  if (flags.data_text !== undefined && flags.data_hex !== undefined) {
    throw new UsageError("give either --data_text or --data_hex, not both");
  }
  let bytes: Uint8Array | undefined;
  if (flags.data_hex !== undefined) {
    if (!/^([0-9a-fA-F]{2})*$/.test(flags.data_hex)) {
      throw new UsageError(`--data_hex must be an even number of hex digits, got ${JSON.stringify(flags.data_hex)}`);
    }
    bytes = Buffer.from(flags.data_hex, "hex");
  }
  if (flags.type_url !== undefined) {
    const value = bytes ?? Buffer.from(flags.data_text ?? "", "utf8");
    return create(AnySchema, { typeUrl: flags.type_url, value });
  }
  if (bytes) return anyPack(BytesValueSchema, create(BytesValueSchema, { value: bytes }));
  if (flags.data_text !== undefined) return anyPack(StringValueSchema, create(StringValueSchema, { value: flags.data_text }));
  return undefined;
}

function parseLabels(text: string | undefined): Label[] {
  if (!text) return [];
  return text.split(",").map((l) => {
    const colon = l.indexOf(":");
    return colon < 0
      ? create(LabelSchema, { serviceName: "client", label: l })
      : create(LabelSchema, { serviceName: l.slice(0, colon), label: l.slice(colon + 1) });
  });
}

const labelText = (l: Label) => `${l.serviceName}:${l.label}`;

function iso(ts: Timestamp | undefined): string {
  return ts ? new Date(timestampMs(ts)).toISOString() : "";
}

function ago(ts: Timestamp | undefined, now: number): string {
  if (!ts) return "never";
  const s = Math.max(0, Math.round((now - timestampMs(ts)) / 1000));
  const rel = s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : s < 172800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86400)}d`;
  return `${iso(ts).replace(/\.\d+Z$/, "Z")} (${rel} ago)`;
}

/** Aligned columns with a header line; "(none)" for no rows. */
export function table(header: string[], rows: string[][]): string {
  if (rows.length === 0) return "(none)\n";
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

function messageJson(m: Message) {
  return {
    message_id: bytesToHex(m.messageId),
    source: { client_id: bytesToHex(m.source?.clientId ?? new Uint8Array()), service_name: m.source?.serviceName ?? "" },
    destination: {
      client_id: bytesToHex(m.destination?.clientId ?? new Uint8Array()),
      service_name: m.destination?.serviceName ?? "",
    },
    message_type: m.messageType,
    creation_time: iso(m.creationTime),
    ...(m.data ? { data: { type_url: m.data.typeUrl, value_hex: bytesToHex(m.data.value) } } : {}),
  };
}

export const COMMANDS: Command[] = [
  {
    name: "listclients",
    usage: "listclients [CLIENT_ID...]",
    summary: "clients with labels, last contact time and address, and the frontend holding their stream",
    flags: [],
    minArgs: 0,
    async run(admin, args) {
      const { clients } = await admin.listClients({ clientIds: args.map(clientId) });
      const now = Date.now();
      const sorted = [...clients].sort((a, b) => bytesToHex(a.clientId).localeCompare(bytesToHex(b.clientId)));
      return {
        json: sorted.map((c) => ({
          client_id: bytesToHex(c.clientId),
          labels: c.labels.map(labelText),
          last_contact_time: iso(c.lastContactTime),
          last_contact_address: c.lastContactAddress,
          last_contact_streaming_to: c.lastContactStreamingTo,
          last_clock: iso(c.lastClock),
          blacklisted: c.blacklisted,
        })),
        text: table(
          ["CLIENT_ID", "LAST_CONTACT", "ADDRESS", "STREAMING_TO", "LABELS"],
          sorted.map((c) => [
            bytesToHex(c.clientId) + (c.blacklisted ? " (blacklisted)" : ""),
            ago(c.lastContactTime, now),
            c.lastContactAddress,
            c.lastContactStreamingTo || "-",
            c.labels.map(labelText).join(","),
          ]),
        ),
      };
    },
  },
  {
    name: "listcontacts",
    usage: "listcontacts CLIENT_ID",
    summary: "recorded contacts (polls and stream starts) of one client",
    flags: [],
    minArgs: 1,
    maxArgs: 1,
    async run(admin, [id]) {
      const { contacts } = await admin.listClientContacts({ clientId: clientId(id!) });
      const sorted = [...contacts].sort((a, b) => timestampMs(a.timestamp!) - timestampMs(b.timestamp!));
      return {
        json: sorted.map((c) => ({
          timestamp: iso(c.timestamp),
          observed_address: c.observedAddress,
          sent_nonce: c.sentNonce.toString(),
          received_nonce: c.receivedNonce.toString(),
        })),
        text: table(
          ["TIME", "ADDRESS", "SENT_NONCE", "RECEIVED_NONCE"],
          sorted.map((c) => [iso(c.timestamp), c.observedAddress, c.sentNonce.toString(16), c.receivedNonce.toString(16)]),
        ),
      };
    },
  },
  {
    name: "send",
    usage: "send CLIENT_ID SERVICE TYPE [--data_text TEXT | --data_hex HEX] [--type_url URL] [--source SERVICE]",
    summary:
      "send a message to a service of a client (data as google.protobuf.StringValue/BytesValue, or raw bytes with --type_url)",
    flags: ["data_text", "data_hex", "type_url", "source"],
    minArgs: 3,
    maxArgs: 3,
    async run(admin, [id, service, type], flags) {
      const destination = clientId(id!);
      if (!service) throw new UsageError("SERVICE must not be empty");
      const messageId = randomBytes(32);
      const data = payload(flags);
      await admin.insertMessage({
        messageId,
        source: { serviceName: flags.source ?? service },
        destination: { clientId: destination, serviceName: service },
        messageType: type!,
        creationTime: timestampFromMs(Date.now()),
        ...(data ? { data } : {}),
      });
      const hex = bytesToHex(messageId);
      return {
        json: { message_id: hex },
        text: `sent message ${hex} to ${service} on client ${bytesToHex(destination)}\n`,
      };
    },
  },
  {
    name: "pending",
    usage: "pending CLIENT_ID... [--offset N] [--limit N] [--data]",
    summary: "messages waiting for delivery to these clients",
    flags: ["offset", "limit", "data"],
    minArgs: 1,
    async run(admin, args, flags) {
      const { messages } = await admin.getPendingMessages({
        clientIds: args.map(clientId),
        offset: count(flags.offset, "offset", 0n),
        limit: count(flags.limit, "limit", 0n),
        wantData: flags.data ?? false,
      });
      return {
        json: messages.map(messageJson),
        text: table(
          ["MESSAGE_ID", "CLIENT_ID", "SERVICE", "TYPE", "CREATED", ...(flags.data ? ["DATA"] : [])],
          messages.map((m) => [
            bytesToHex(m.messageId),
            bytesToHex(m.destination?.clientId ?? new Uint8Array()),
            m.destination?.serviceName ?? "",
            m.messageType,
            iso(m.creationTime),
            ...(flags.data ? [m.data ? `${m.data.typeUrl} (${m.data.value.length} bytes)` : "-"] : []),
          ]),
        ),
      };
    },
  },
  {
    name: "pendingcount",
    usage: "pendingcount CLIENT_ID...",
    summary: "how many messages wait for delivery to these clients",
    flags: [],
    minArgs: 1,
    async run(admin, args) {
      const { count: n } = await admin.getPendingMessageCount({ clientIds: args.map(clientId) });
      return { json: { count: Number(n) }, text: `${n}\n` };
    },
  },
  {
    name: "deletepending",
    usage: "deletepending CLIENT_ID...",
    summary: "give up on every message waiting for these clients (recorded as failed)",
    flags: [],
    minArgs: 1,
    async run(admin, args) {
      const ids = args.map(clientId);
      await admin.deletePendingMessages({ clientIds: ids });
      return { json: { deleted_for: args }, text: `deleted the pending messages of ${ids.length} client(s)\n` };
    },
  },
  {
    name: "status",
    usage: "status MESSAGE_ID",
    summary: "when a message was created and whether it was processed or failed",
    flags: [],
    minArgs: 1,
    maxArgs: 1,
    async run(admin, [id]) {
      const res = await admin.getMessageStatus({ messageId: hexId(id!, 32, "message id") });
      if (!res.creationTime) throw new NotKnownError(`message ${id} is not known to the server`);
      const r = res.result;
      const state = !r ? "pending" : r.failed ? "failed" : "processed";
      return {
        json: {
          message_id: id,
          state,
          creation_time: iso(res.creationTime),
          ...(r ? { processed_time: iso(r.processedTime), failed: r.failed, failed_reason: r.failedReason } : {}),
        },
        text:
          `message ${id}: ${state}\ncreated ${iso(res.creationTime)}\n` +
          (r ? `${r.failed ? "failed" : "processed"} ${iso(r.processedTime)}${r.failed ? `: ${r.failedReason}` : ""}\n` : ""),
      };
    },
  },
  {
    name: "blacklist",
    aliases: ["blacklistclients"],
    usage: "blacklist CLIENT_ID...",
    summary: "make these clients change their identity (rekey) at their next contact",
    flags: [],
    minArgs: 1,
    async run(admin, args) {
      const ids = args.map(clientId);
      for (const id of ids) await admin.blacklistClient({ clientId: id });
      return { json: { blacklisted: args }, text: `blacklisted ${args.join(", ")}\n` };
    },
  },
  {
    name: "listbroadcasts",
    aliases: ["listactivebroadcasts"],
    usage: "listbroadcasts [SERVICE]",
    summary: "active broadcasts, optionally only those from one service",
    flags: [],
    minArgs: 0,
    maxArgs: 1,
    async run(admin, [service]) {
      const { broadcasts } = await admin.listActiveBroadcasts({ serviceName: service ?? "" });
      return {
        json: broadcasts.map((b) => ({
          broadcast_id: bytesToHex(b.broadcastId),
          source_service: b.source?.serviceName ?? "",
          destination_service: b.destination?.serviceName ?? "",
          message_type: b.messageType,
          required_labels: b.requiredLabels.map(labelText),
          expiration_time: iso(b.expirationTime),
        })),
        text: table(
          ["BROADCAST_ID", "SERVICE", "TYPE", "LABELS", "EXPIRES"],
          broadcasts.map((b) => [
            bytesToHex(b.broadcastId),
            b.destination?.serviceName || b.source?.serviceName || "",
            b.messageType,
            b.requiredLabels.map(labelText).join(",") || "(all clients)",
            iso(b.expirationTime) || "never",
          ]),
        ),
      };
    },
  },
  {
    name: "createbroadcast",
    usage:
      "createbroadcast SERVICE TYPE [--data_text TEXT | --data_hex HEX] [--type_url URL] [--labels L1,L2] [--limit N] [--expires 24h]",
    summary: "send a message to a service on every client with the labels (client labels; service:label for others)",
    flags: ["data_text", "data_hex", "type_url", "labels", "limit", "expires"],
    flagHelp: { limit: "reach at most N clients (default no limit)" },
    minArgs: 2,
    maxArgs: 2,
    async run(admin, [service, type], flags) {
      const broadcastId = randomBytes(8);
      const limit = count(flags.limit, "limit", BROADCAST_UNLIMITED);
      if (limit === 0n) throw new UsageError("--limit 0 would create a disabled broadcast; give the most clients to reach");
      const data = payload(flags);
      const expires = flags.expires !== undefined ? Date.now() + parseDuration(flags.expires, "expires") : undefined;
      await admin.createBroadcast({
        broadcast: {
          broadcastId,
          source: { serviceName: service! },
          destination: { serviceName: service! },
          messageType: type!,
          requiredLabels: parseLabels(flags.labels),
          ...(expires !== undefined ? { expirationTime: timestampFromMs(expires) } : {}),
          ...(data ? { data } : {}),
        },
        limit,
      });
      const hex = bytesToHex(broadcastId);
      return { json: { broadcast_id: hex }, text: `created broadcast ${hex}\n` };
    },
  },
  {
    name: "disablebroadcasts",
    usage: "disablebroadcasts BROADCAST_ID...",
    summary: "stop these broadcasts",
    flags: [],
    minArgs: 1,
    async run(admin, args) {
      await admin.disableBroadcasts({ broadcastIds: args.map((a) => hexId(a, 8, "broadcast id")) });
      return { json: { disabled: args }, text: `disabled ${args.join(", ")}\n` };
    },
  },
  {
    name: "storefile",
    usage: "storefile SERVICE NAME FILE",
    summary: "store a file that clients fetch at /files/SERVICE/NAME",
    flags: [],
    minArgs: 3,
    maxArgs: 3,
    async run(admin, [service, name, file]) {
      let data: Buffer;
      try {
        data = readFileSync(file!);
      } catch (e) {
        throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
      }
      await admin.storeFile({ serviceName: service!, fileName: name!, data });
      return {
        json: { service_name: service, file_name: name, bytes: data.length },
        text: `stored ${file} (${data.length} bytes) as ${service}/${name}\n`,
      };
    },
  },
  {
    name: "deletefile",
    usage: "deletefile SERVICE NAME",
    summary: "delete a stored file",
    flags: [],
    minArgs: 2,
    maxArgs: 2,
    async run(admin, [service, name]) {
      await admin.deleteFile({ serviceName: service!, fileName: name! });
      return { json: { service_name: service, file_name: name }, text: `deleted ${service}/${name}\n` };
    },
  },
  {
    name: "resourceusage",
    usage: "resourceusage CLIENT_ID [--since 24h]",
    summary: "resource usage reports of a client's services",
    flags: ["since"],
    minArgs: 1,
    maxArgs: 1,
    async run(admin, [id], flags) {
      const end = Date.now() + 1000;
      const start = end - parseDuration(flags.since ?? "24h", "since");
      const { records } = await admin.fetchClientResourceUsageRecords({
        clientId: clientId(id!),
        startTimestamp: timestampFromMs(start),
        endTimestamp: timestampFromMs(end),
      });
      const sorted = [...records].sort((a, b) => timestampMs(a.serverTimestamp!) - timestampMs(b.serverTimestamp!));
      return {
        json: sorted.map((r) => ({
          server_timestamp: iso(r.serverTimestamp),
          scope: r.scope,
          pid: Number(r.pid),
          process_start_time: iso(r.processStartTime),
          mean_user_cpu_rate: r.meanUserCpuRate,
          max_user_cpu_rate: r.maxUserCpuRate,
          mean_system_cpu_rate: r.meanSystemCpuRate,
          max_system_cpu_rate: r.maxSystemCpuRate,
          mean_resident_memory_mib: r.meanResidentMemoryMib,
          max_resident_memory_mib: r.maxResidentMemoryMib,
          mean_num_fds: r.meanNumFds,
          max_num_fds: r.maxNumFds,
          process_terminated: r.processTerminated,
        })),
        text: table(
          ["TIME", "SCOPE", "PID", "CPU_USER_MEAN/MAX", "CPU_SYS_MEAN/MAX", "RSS_MIB_MEAN/MAX", "TERMINATED"],
          sorted.map((r) => [
            iso(r.serverTimestamp),
            r.scope,
            String(r.pid),
            `${r.meanUserCpuRate.toFixed(1)}/${r.maxUserCpuRate.toFixed(1)}`,
            `${r.meanSystemCpuRate.toFixed(1)}/${r.maxSystemCpuRate.toFixed(1)}`,
            `${r.meanResidentMemoryMib}/${r.maxResidentMemoryMib}`,
            r.processTerminated ? "yes" : "",
          ]),
        ),
      };
    },
  },
];

/** `fleetspeak-admin COMMAND --help`: the command's usage, what it does, and its flags. */
export function commandHelp(c: Command, globalFlags: string): string {
  const lines = [`usage: fleetspeak-admin [global flags] ${c.usage}`, "", `${c.summary}.`];
  if (c.aliases) lines.push(`Also called: ${c.aliases.join(", ")}.`);
  if (c.flags.length > 0) {
    const rows = c.flags.map((f) => {
      const [value, help] = FLAG_HELP[f];
      return [`--${f}${value ? ` ${value}` : ""}`, c.flagHelp?.[f] ?? help] as const;
    });
    const width = Math.max(...rows.map(([flag]) => flag.length));
    lines.push("", ...rows.map(([flag, help]) => `  ${flag.padEnd(width)}  ${help}`));
  }
  lines.push("", `global flags: ${globalFlags} (fleetspeak-admin --help says more)`);
  return `${lines.join("\n")}\n`;
}

export function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name || c.aliases?.includes(name));
}
