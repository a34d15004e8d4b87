// Checks a server serving a Go fixture's database against the fixture's description, through what
// both Fleetspeak (Go) and ours serve: the Admin API, and the frontend's /files for stored files
// (the Admin API can store and delete files but not read them). Returns one line per difference,
// naming the row and what was got and wanted; an empty list means the server shows the fixture.
//
// Fleetspeak's own server has two known flaws that the check allows when told it is talking to it
// (`server: "go"`), and nowhere else:
//   - GetMessageStatus never reports a failure: its datastores do not read the failed columns, so a
//     failed message shows as processed without a reason (the rows do say failed).
//   - its MySQL ListClients given client IDs returns no labels (it looks the labels up by the hex
//     text of the ID in a BINARY(8) column); ListClients without IDs has them.
import { request } from "node:https";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import type { Label, Message } from "../../src/gen/fleetspeak/common_pb.js";
import { adminClient } from "./go-fixture-server.js";
import { type ExpectedMessage, type GoBackend, type GoFixtureExpected, type ServerKind, show } from "./go-fixture-types.js";
import { makeClientIdentity } from "./tls.js";

export interface CheckOptions {
  /** Which implementation answers at the admin address. */
  server: ServerKind;
  /** The database behind it (Fleetspeak's MySQL flaw above is MySQL's only). */
  backend: GoBackend;
  /** The frontend serving /files, "host:port" (connected to as is, TLS name `serverName`). */
  frontend: string;
  /** PEM of the CA the frontend's certificate chains to. */
  caPem: string;
  /** Default "localhost", the name fleetspeak_config put in the server certificate. */
  serverName?: string;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const ns = (t: Timestamp | undefined) => (t ? t.seconds * 1_000_000_000n + BigInt(t.nanos) : undefined);
const labelsOf = (ls: Label[]) => ls.map((l) => `${l.serviceName}/${l.label}`).sort();

function fetchFile(opts: CheckOptions, service: string, name: string): Promise<{ status: number; body: Buffer }> {
  const [host, port] = [opts.frontend.slice(0, opts.frontend.lastIndexOf(":")), opts.frontend.slice(opts.frontend.lastIndexOf(":") + 1)];
  const id = makeClientIdentity();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: host === "localhost" ? "127.0.0.1" : host,
        port: Number(port),
        path: `/files/${encodeURIComponent(service)}/${encodeURIComponent(name)}`,
        method: "GET",
        ca: opts.caPem,
        servername: opts.serverName ?? "localhost",
        key: id.keyPem,
        cert: id.certPem,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

export async function checkFixture(adminAddress: string, expected: GoFixtureExpected, opts: CheckOptions): Promise<string[]> {
  const admin = adminClient(adminAddress);
  const diffs: string[] = [];
  const who = new Map(expected.clients.map((c) => [c.clientId, `${c.name} ${c.clientId}`]));
  const clientIds = expected.clients.map((c) => Buffer.from(c.clientId, "hex"));

  // Clients: all of them with labels and blacklist flags, then one by one.
  const { clients } = await admin.listClients({});
  const listed = new Map(clients.map((c) => [hex(c.clientId), c]));
  for (const c of expected.clients) {
    const got = listed.get(c.clientId);
    const name = `client ${who.get(c.clientId)}`;
    if (!got) {
      diffs.push(`${name}: not in ListClients`);
      continue;
    }
    const want = c.labels.map((l) => `client/${l}`);
    if (show(labelsOf(got.labels)) !== show(want)) diffs.push(`${name}: ListClients labels ${show(labelsOf(got.labels))}, want ${show(want)}`);
    if (got.blacklisted !== c.blacklisted) diffs.push(`${name}: ListClients blacklisted ${got.blacklisted}, want ${c.blacklisted}`);
    const one = (await admin.listClients({ clientIds: [Buffer.from(c.clientId, "hex")] })).clients;
    if (one.length !== 1 || hex(one[0]!.clientId) !== c.clientId) {
      diffs.push(`${name}: ListClients for its ID returned ${show(one.map((x) => hex(x.clientId)))}`);
    } else {
      const labels = labelsOf(one[0]!.labels);
      const goMysqlFlaw = opts.server === "go" && opts.backend === "mysql" && labels.length === 0;
      if (!goMysqlFlaw && show(labels) !== show(want)) diffs.push(`${name}: ListClients for its ID has labels ${show(labels)}, want ${show(want)}`);
      if (one[0]!.blacklisted !== c.blacklisted) diffs.push(`${name}: ListClients for its ID: blacklisted ${one[0]!.blacklisted}`);
    }
  }
  for (const id of listed.keys()) {
    if (!who.has(id)) diffs.push(`client ${id}: listed, but the fixture has no such client`);
  }

  // Contacts: each one recorded is still there, nonces and address intact; none for the pruned client.
  for (const c of expected.clients) {
    const { contacts } = await admin.listClientContacts({ clientId: Buffer.from(c.clientId, "hex") });
    const name = `client ${who.get(c.clientId)}`;
    if (!c.hasContacts && contacts.length > 0) diffs.push(`${name}: has ${contacts.length} contacts, want none (they were pruned)`);
    if (c.hasContacts && contacts.length === 0) diffs.push(`${name}: has no contacts`);
    const got = new Set(contacts.map((k) => show([ns(k.timestamp), k.sentNonce, k.receivedNonce, k.observedAddress])));
    for (const k of c.contacts) {
      const key = show([k.timeNs, k.sentNonce, k.receivedNonce, k.address]);
      if (!got.has(key)) diffs.push(`${name}: contact [time ns, sent nonce, received nonce, address] ${key} missing`);
    }
  }

  // Messages: status of every one, creation times intact.
  for (const m of expected.messages) {
    const r = await admin.getMessageStatus({ messageId: Buffer.from(m.messageId, "hex") });
    const name = `message ${m.messageId} (${m.name})`;
    if (!r.creationTime) {
      diffs.push(`${name}: unknown to GetMessageStatus`);
      continue;
    }
    if (m.creationTime && ns(r.creationTime) !== m.creationTime.seconds * 1_000_000_000n + BigInt(m.creationTime.nanos)) {
      diffs.push(`${name}: creation time ${timestampDate(r.creationTime).toISOString()} (${ns(r.creationTime)} ns), want ${show(m.creationTime)}`);
    }
    const res = r.result;
    const s = m.status;
    if (s.kind === "pending") {
      if (res) diffs.push(`${name}: has a result ${show({ failed: res.failed, reason: res.failedReason })}, want pending`);
    } else if (!res) {
      diffs.push(`${name}: pending, want ${s.kind}`);
    } else if (s.kind === "processed") {
      if (res.failed) diffs.push(`${name}: failed (${res.failedReason}), want processed`);
    } else if (!(res.failed && res.failedReason === s.reason) && !(opts.server === "go" && !res.failed && res.failedReason === "")) {
      diffs.push(`${name}: result ${show({ failed: res.failed, reason: res.failedReason })}, want failed with ${show(s.reason)}`);
    }
  }

  // Pending client-bound messages: the list, the count, their payloads and annotations.
  const wantPending = expected.messages.filter((m) => m.status.kind === "pending" && m.destination.clientId !== "");
  const { messages: pending } = await admin.getPendingMessages({ clientIds, wantData: true });
  const gotPending = new Map(pending.map((p) => [hex(p.messageId), p]));
  for (const m of wantPending) {
    const p = gotPending.get(m.messageId);
    if (!p) {
      diffs.push(`GetPendingMessages: ${m.messageId} (${m.name}) missing`);
      continue;
    }
    diffs.push(...pendingDiffs(m, p));
  }
  for (const id of gotPending.keys()) {
    if (!wantPending.some((m) => m.messageId === id)) diffs.push(`GetPendingMessages: ${id} listed, but it is not pending in the fixture`);
  }
  const { count } = await admin.getPendingMessageCount({ clientIds });
  if (count !== BigInt(wantPending.length)) diffs.push(`GetPendingMessageCount: ${count}, want ${wantPending.length}`);

  // Broadcasts: exactly the active ones, as created.
  const { broadcasts } = await admin.listActiveBroadcasts({});
  const active = new Map(broadcasts.map((b) => [hex(b.broadcastId), b]));
  for (const b of expected.broadcasts) {
    const got = active.get(b.broadcastId);
    const name = `broadcast ${b.broadcastId} (${b.name})`;
    if (!b.active) {
      if (got) diffs.push(`${name}: listed as active; it is ${b.expirationTime ? "expired" : "at its limit"}`);
      continue;
    }
    if (!got) {
      diffs.push(`${name}: not listed as active`);
      continue;
    }
    const fields = {
      source: got.source?.serviceName ?? "",
      destination: got.destination?.serviceName ?? "",
      messageType: got.messageType,
      labels: labelsOf(got.requiredLabels),
      expires: ns(got.expirationTime),
      data: got.data ? [got.data.typeUrl, hex(got.data.value)] : undefined,
    };
    const want = {
      source: b.sourceService,
      destination: b.destinationService,
      messageType: b.messageType,
      labels: b.labels.map((l) => `client/${l}`),
      expires: b.expirationTime ? b.expirationTime.seconds * 1_000_000_000n + BigInt(b.expirationTime.nanos) : undefined,
      data: [b.data.typeUrl, hex(b.data.value)],
    };
    if (show(fields) !== show(want)) diffs.push(`${name}: ${show(fields)}, want ${show(want)}`);
  }
  for (const id of active.keys()) {
    if (!expected.broadcasts.some((b) => b.broadcastId === id)) diffs.push(`broadcast ${id}: active, but not in the fixture`);
  }

  // Resource usage: every record still there. (The range ends tomorrow: Fleetspeak compares it in
  // int64 nanoseconds, which a time after 2262 overflows, answering nothing.)
  const tomorrow = { seconds: BigInt(Math.floor(Date.now() / 1000) + 86_400), nanos: 0 };
  for (const c of expected.clients) {
    const { records } = await admin.fetchClientResourceUsageRecords({
      clientId: Buffer.from(c.clientId, "hex"),
      startTimestamp: { seconds: 0n, nanos: 0 },
      endTimestamp: tomorrow,
    });
    const got = new Set(records.map((r) => show([r.scope, r.pid, ns(r.clientTimestamp)])));
    const missing = c.resourceUsage.filter((r) => !got.has(show([r.scope, r.pid, r.clientTimestampNs])));
    if (missing.length > 0) {
      diffs.push(`client ${who.get(c.clientId)}: ${missing.length} of ${c.resourceUsage.length} resource-usage records missing, e.g. ${show(missing[0])}`);
    }
  }

  // Files, as clients fetch them.
  for (const f of expected.files) {
    const got = await fetchFile(opts, f.service, f.name);
    if (got.status !== 200 || !got.body.equals(f.data)) {
      diffs.push(`file ${f.service}/${f.name}: HTTP ${got.status}, ${got.body.length} bytes${got.status === 200 ? " (different content)" : ""}; want ${f.data.length} bytes`);
    }
  }
  return diffs;
}

function pendingDiffs(m: ExpectedMessage, p: Message): string[] {
  const got = {
    source: [p.source?.clientId ? hex(p.source.clientId) : "", p.source?.serviceName ?? ""],
    destination: [p.destination?.clientId ? hex(p.destination.clientId) : "", p.destination?.serviceName ?? ""],
    messageType: p.messageType,
    data: p.data ? [p.data.typeUrl, hex(p.data.value)] : undefined,
    annotations: p.annotations?.entries.map((e) => [e.key, e.value]) ?? [],
  };
  const want = {
    source: [m.source.clientId, m.source.serviceName],
    destination: [m.destination.clientId, m.destination.serviceName],
    messageType: m.messageType,
    data: m.data ? [m.data.typeUrl, hex(m.data.value)] : undefined,
    annotations: m.annotations ?? [],
  };
  return show(got) === show(want) ? [] : [`GetPendingMessages: ${m.messageId} (${m.name}) is ${show(got)}, want ${show(want)}`];
}
