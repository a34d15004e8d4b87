// Direct access to a database in Fleetspeak's (Go) own schema, MySQL (`server/mysql`) or SQLite
// (`server/sqlite`), for the Go fixture: what the Admin API cannot show (retry counts, due times,
// sent counts, nonces as stored) and the few edits that stand for what a test cannot wait for or
// that an operator does by hand (a due time reached, contacts pruned).
//
// The two schemas hold the same things in different encodings: MySQL keeps IDs as raw bytes
// (BINARY(8)/BINARY(32)) and nonces as 8 little-endian bytes, SQLite keeps IDs as lower-case hex
// text and nonces as unpadded hex text; MySQL's pending_messages has a for_server column that
// SQLite's lacks (server-bound is told there by destination_client_id = '').
import Database from "better-sqlite3";
import mysql, { type Connection, type RowDataPacket } from "mysql2/promise";
import { parseMysqlDsn } from "../../src/common/mysql-dsn.js";

export type GoBackend = "mysql" | "sqlite";

export interface PendingRow {
  messageId: string;
  retryCount: number;
  /** Microseconds since the epoch, as Fleetspeak stores it. */
  scheduledTimeUs: bigint;
  forServer: boolean;
}

export interface MessageRow {
  messageId: string;
  sourceClientId: string;
  sourceServiceName: string;
  destinationClientId: string;
  destinationServiceName: string;
  messageType: string;
  creationSeconds: bigint;
  creationNanos: number;
  processed: boolean;
  failed: boolean;
  failedReason: string | null;
}

export interface ClientRow {
  clientId: string;
  blacklisted: boolean;
  /** Labels of service "client", sorted. */
  labels: string[];
}

export interface ContactRow {
  timeNs: bigint;
  sentNonce: bigint;
  receivedNonce: bigint;
  address: string;
}

export interface BroadcastRow {
  broadcastId: string;
  sent: bigint;
  allocated: bigint;
  limit: bigint;
}

export interface AllocationRow {
  sent: bigint;
  limit: bigint;
}

export interface ResourceUsageRow {
  scope: string;
  pid: bigint;
  clientTimestampNs: bigint;
}

type Row = Record<string, unknown>;

function hexOf(v: unknown): string {
  if (v === null || v === undefined) return "";
  return Buffer.isBuffer(v) ? v.toString("hex") : String(v);
}

function big(v: unknown): bigint {
  if (v === null || v === undefined) return 0n;
  return BigInt(v as string | number | bigint);
}

/** A Fleetspeak (Go) database: the rows the fixture reads and the few edits it makes. */
export class GoFixtureDb {
  private constructor(
    readonly backend: GoBackend,
    private readonly run: (sql: string, params: unknown[]) => Promise<Row[]>,
    private readonly closeConnection: () => Promise<void>,
  ) {}

  static async open(backend: "mysql", dsn: string): Promise<GoFixtureDb>;
  static async open(backend: "sqlite", path: string): Promise<GoFixtureDb>;
  static async open(backend: GoBackend, where: string): Promise<GoFixtureDb> {
    if (backend === "sqlite") {
      // Fleetspeak's server holds the file open (WAL mode) while the fixture reads and edits it.
      const db = new Database(where, { timeout: 10_000 });
      db.defaultSafeIntegers(true);
      const run = async (sql: string, params: unknown[]) => {
        const st = db.prepare(sql);
        if (st.reader) return st.all(...params) as Row[];
        st.run(...params);
        return [];
      };
      return new GoFixtureDb(backend, run, async () => void db.close());
    }
    const o = parseMysqlDsn(where);
    const conn: Connection = await mysql.createConnection({
      ...(o.socketPath ? { socketPath: o.socketPath } : { host: o.host, port: o.port }),
      user: o.user,
      password: o.password,
      database: o.database,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
    const run = async (sql: string, params: unknown[]) => {
      const [rows] = await conn.query(sql, params);
      return Array.isArray(rows) ? (rows as RowDataPacket[]) : [];
    };
    return new GoFixtureDb(backend, run, () => conn.end());
  }

  close(): Promise<void> {
    return this.closeConnection();
  }

  /** An ID (client, message, broadcast) as this schema keeps it. */
  private id(hex: string): string | Buffer {
    return this.backend === "mysql" ? Buffer.from(hex, "hex") : hex.toLowerCase();
  }

  private nonce(v: unknown): bigint {
    if (this.backend === "sqlite") return BigInt(`0x${String(v)}`);
    return (v as Buffer).readBigUInt64LE(0);
  }

  /** Server-bound messages are those without a destination client: NULL in MySQL, '' in SQLite. */
  private get serverBound(): string {
    return this.backend === "mysql" ? "m.destination_client_id IS NULL" : "m.destination_client_id = ''";
  }

  async pending(): Promise<PendingRow[]> {
    const rows = await this.run(
      `SELECT pm.message_id, pm.retry_count, pm.scheduled_time, ${this.serverBound} AS for_server
       FROM pending_messages pm JOIN messages m ON m.message_id = pm.message_id ORDER BY pm.message_id`,
      [],
    );
    return rows.map((r) => ({
      messageId: hexOf(r.message_id),
      retryCount: Number(r.retry_count),
      scheduledTimeUs: big(r.scheduled_time),
      forServer: Number(r.for_server) === 1,
    }));
  }

  async messages(
    where: { messageId?: string; sourceClientId?: string; destinationClientId?: string; messageType?: string } = {},
  ): Promise<MessageRow[]> {
    const conds: string[] = [];
    const params: unknown[] = [];
    if (where.messageId !== undefined) {
      conds.push("m.message_id = ?");
      params.push(this.id(where.messageId));
    }
    if (where.sourceClientId !== undefined) {
      conds.push("m.source_client_id = ?");
      params.push(this.id(where.sourceClientId));
    }
    if (where.destinationClientId !== undefined) {
      conds.push("m.destination_client_id = ?");
      params.push(this.id(where.destinationClientId));
    }
    if (where.messageType !== undefined) {
      conds.push("m.message_type = ?");
      params.push(where.messageType);
    }
    const rows = await this.run(
      `SELECT m.message_id, m.source_client_id, m.source_service_name, m.destination_client_id,
         m.destination_service_name, m.message_type, m.creation_time_seconds, m.creation_time_nanos,
         m.processed_time_seconds, m.failed, m.failed_reason
       FROM messages m ${conds.length ? `WHERE ${conds.join(" AND ")}` : ""} ORDER BY m.message_id`,
      params,
    );
    return rows.map((r) => ({
      messageId: hexOf(r.message_id),
      sourceClientId: hexOf(r.source_client_id),
      sourceServiceName: String(r.source_service_name),
      destinationClientId: hexOf(r.destination_client_id),
      destinationServiceName: String(r.destination_service_name),
      messageType: String(r.message_type ?? ""),
      creationSeconds: big(r.creation_time_seconds),
      creationNanos: Number(r.creation_time_nanos),
      processed: r.processed_time_seconds !== null,
      failed: r.failed !== null && Number(r.failed) !== 0,
      failedReason: r.failed_reason === null ? null : String(r.failed_reason),
    }));
  }

  async message(messageId: string): Promise<MessageRow | undefined> {
    return (await this.messages({ messageId }))[0];
  }

  /**
   * Makes pending messages due at `atUs` (stands for their retry time having come), whichever
   * layout the database has now: Fleetspeak's (hex text IDs on SQLite) or this server's (bytes),
   * as after a conversion.
   */
  async setDue(messageIds: string[], atUs: bigint): Promise<void> {
    for (const id of messageIds) {
      await this.run("UPDATE pending_messages SET scheduled_time = ? WHERE message_id IN (?, ?)", [
        atUs.toString(),
        id.toLowerCase(),
        Buffer.from(id, "hex"),
      ]);
    }
  }

  async clients(): Promise<ClientRow[]> {
    const rows = await this.run("SELECT client_id, blacklisted FROM clients ORDER BY client_id", []);
    const labels = await this.run("SELECT client_id, label FROM client_labels WHERE service_name = 'client' ORDER BY label", []);
    return rows.map((r) => {
      const clientId = hexOf(r.client_id);
      return {
        clientId,
        blacklisted: Number(r.blacklisted) !== 0,
        labels: labels.filter((l) => hexOf(l.client_id) === clientId).map((l) => String(l.label))
          .sort(),
      };
    });
  }

  async contacts(clientId: string): Promise<ContactRow[]> {
    const rows = await this.run(
      "SELECT time, sent_nonce, received_nonce, address FROM client_contacts WHERE client_id = ? ORDER BY client_contact_id",
      [this.id(clientId)],
    );
    return rows.map((r) => ({
      timeNs: big(r.time),
      sentNonce: this.nonce(r.sent_nonce),
      receivedNonce: this.nonce(r.received_nonce),
      address: String(r.address ?? ""),
    }));
  }

  /**
   * Deletes a client's contacts, as an operator pruning the database by hand does (Fleetspeak's
   * docs/DB-PRUNING.md deletes from its tables with plain SQL). SQLite's schema has no ON DELETE
   * CASCADE, so the links from contacts to messages go first there.
   */
  async pruneContacts(clientId: string): Promise<void> {
    if (this.backend === "sqlite") {
      await this.run(
        "DELETE FROM client_contact_messages WHERE client_contact_id IN (SELECT client_contact_id FROM client_contacts WHERE client_id = ?)",
        [this.id(clientId)],
      );
    }
    await this.run("DELETE FROM client_contacts WHERE client_id = ?", [this.id(clientId)]);
  }

  async broadcasts(): Promise<BroadcastRow[]> {
    const rows = await this.run("SELECT broadcast_id, sent, allocated, message_limit FROM broadcasts", []);
    return rows.map((r) => ({
      broadcastId: hexOf(r.broadcast_id),
      sent: big(r.sent),
      allocated: big(r.allocated),
      limit: big(r.message_limit),
    }));
  }

  /** Broadcast ID → the clients it was sent to. */
  async broadcastRecipients(): Promise<Map<string, string[]>> {
    const rows = await this.run("SELECT broadcast_id, client_id FROM broadcast_sent ORDER BY client_id", []);
    const out = new Map<string, string[]>();
    for (const r of rows) {
      const b = hexOf(r.broadcast_id);
      out.set(b, [...(out.get(b) ?? []), hexOf(r.client_id)]);
    }
    return out;
  }

  /** Broadcast ID → its allocations (what a server that stopped uncleanly left claimed). */
  async allocations(): Promise<Map<string, AllocationRow[]>> {
    const rows = await this.run("SELECT broadcast_id, sent, message_limit FROM broadcast_allocations", []);
    const out = new Map<string, AllocationRow[]>();
    for (const r of rows) {
      const b = hexOf(r.broadcast_id);
      out.set(b, [...(out.get(b) ?? []), { sent: big(r.sent), limit: big(r.message_limit) }]);
    }
    return out;
  }

  async resourceUsage(clientId: string): Promise<ResourceUsageRow[]> {
    const rows = await this.run(
      "SELECT scope, pid, client_timestamp FROM client_resource_usage_records WHERE client_id = ? ORDER BY client_timestamp",
      [this.id(clientId)],
    );
    return rows.map((r) => ({ scope: String(r.scope), pid: big(r.pid), clientTimestampNs: big(r.client_timestamp) }));
  }
}
