// The MySQL store on a 3-node MariaDB Galera cluster (test/support/galera.ts). Galera replicates
// synchronously but locks only on the node that runs a transaction: two servers on two nodes can
// both lock and update the same rows, and the one that commits second fails certification
// (ER_LOCK_DEADLOCK at COMMIT), which the store must retry whole. So: the conformance suite with
// each group's store on another node, and concurrent claimers on the three nodes, none of which
// may be handed a message another one was handed, with the conflicts counted.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import mysql, { type RowDataPacket } from "mysql2/promise";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { AddressSchema, type Message, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { latestVersion } from "../../../src/server/store/migrations.js";
import { MYSQL_MIGRATIONS } from "../../../src/server/store/mysql-schema.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { type GaleraCluster, startGaleraCluster } from "../../support/galera.js";
import { goMysqlSchemaStatements } from "../../support/go-server.js";
import { claimAllClientMessages, claimAllServerMessages } from "./claim-loops.js";
import { defineStoreConformance } from "./conformance.js";

let cluster: Promise<GaleraCluster> | undefined;
/** One cluster for the whole file, started by the first test that needs it. */
function galera(): Promise<GaleraCluster> {
  cluster ??= startGaleraCluster();
  return cluster;
}
after(async () => {
  await (await cluster)?.destroy();
});

let databases = 0;
async function newDatabase(): Promise<{ name: string; c: GaleraCluster }> {
  const c = await galera();
  const name = `fsgalera_${process.pid}_${databases++}`;
  await c.createDatabase(name);
  return { name, c };
}

defineStoreConformance("mysql on a Galera cluster", async () => {
  const { name, c } = await newDatabase();
  const node = c.nodes[databases % c.nodes.length]!;
  const store = await MysqlStore.fromDsn(node.dsn(name), { poolSize: 4 });
  return { store, cleanup: () => store.close() };
});

function message(to: Uint8Array): Message {
  return create(MessageSchema, {
    messageId: randomBytes(32),
    source: create(AddressSchema, { serviceName: "admin" }),
    destination: create(AddressSchema, { clientId: to, serviceName: "svc" }),
    messageType: "T",
    creationTime: timestampNow(),
  });
}

/**
 * Waits until every node has applied the schema (its triggers above all): DDL replicates in
 * total order but a node may still be applying it when the statement returns on another, and a
 * trigger fired while a node writes it out fails with "Unknown trigger has an error in its body"
 * (MariaDB). wsrep_sync_wait makes each read wait for the node to catch up first.
 */
async function untilSchemaApplied(c: GaleraCluster, name: string): Promise<void> {
  const counts = async () =>
    Promise.all(
      c.nodes.map(async (node) => {
        const conn = await mysql.createConnection({ host: "127.0.0.1", port: node.port, user: "root" });
        try {
          await conn.query("SET SESSION wsrep_sync_wait = 15");
          const [rows] = await conn.query<RowDataPacket[]>(
            "SELECT COUNT(*) AS n FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
            [name],
          );
          return Number(rows[0]!.n);
        } finally {
          await conn.end();
        }
      }),
    );
  const deadline = Date.now() + 30_000;
  for (;;) {
    const n = await counts();
    if (n[0]! > 0 && n.every((x) => x === n[0])) return;
    if (Date.now() > deadline) throw new Error(`triggers per node after 30 s: ${n.join(", ")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function assertEachOnce(claimed: string[][], expected: Set<string>): void {
  const seen = new Set<string>();
  const twice: string[] = [];
  for (const id of claimed.flat()) {
    if (seen.has(id)) twice.push(id);
    seen.add(id);
  }
  assert.deepEqual(twice, [], `${twice.length} messages were handed to two claimers`);
  assert.equal(seen.size, expected.size);
  for (const id of expected) assert.ok(seen.has(id), `message ${id} was never claimed`);
  const busy = claimed.filter((part) => part.length > 0).length;
  assert.ok(busy >= 2, `claimed per node: ${claimed.map((p) => p.length).join(", ")}; the test did not exercise contention`);
}

describe("MySQL claims by servers on different Galera nodes", { timeout: 300_000 }, () => {
  const MESSAGES = 2000;
  const CLIENTS = 20;
  let stores: MysqlStore[];
  const retries = new Map<string, number>();

  before(async () => {
    const { name, c } = await newDatabase();
    stores = [];
    for (const node of c.nodes) {
      const s = await MysqlStore.fromDsn(node.dsn(name), { poolSize: 4 });
      s.observeRetries((op, reason) => retries.set(`${op} ${reason}`, (retries.get(`${op} ${reason}`) ?? 0) + 1));
      stores.push(s);
    }
    await untilSchemaApplied(c, name);
  });
  after(async () => {
    await Promise.all((stores ?? []).map((s) => s.close()));
  });

  it(`hands each of ${MESSAGES} client messages to exactly one claimer, conflicts retried`, async () => {
    const clients = Array.from({ length: CLIENTS }, () => randomBytes(8));
    const msgs = Array.from({ length: MESSAGES }, (_, i) => message(clients[i % CLIENTS]!));
    for (let i = 0; i < msgs.length; i += 100) await stores[i % 3]!.storeMessages(msgs.slice(i, i + 100));
    const expected = new Set(msgs.map((m) => Buffer.from(m.messageId).toString("hex")));
    retries.clear();
    // The claimers walk the clients in opposite orders, so that they meet on the same rows.
    const reversed = [...clients].reverse();
    const claimed = await Promise.all(stores.map((s, i) => claimAllClientMessages(s, i % 2 === 0 ? reversed : clients)));
    assertEachOnce(claimed, expected);
    assert.ok((retries.get("claimClientMessages deadlock") ?? 0) > 0, `conflicts seen: ${JSON.stringify([...retries])}`);
  });

  it(`hands each of ${MESSAGES} backlogged server messages to exactly one claimer`, async () => {
    const msgs = Array.from({ length: MESSAGES }, () => message(new Uint8Array(0)));
    for (let i = 0; i < msgs.length; i += 100) {
      await stores[i % 3]!.storeMessages(msgs.slice(i, i + 100), { serverDueMs: Date.now() - 1000 });
    }
    const expected = new Set(msgs.map((m) => Buffer.from(m.messageId).toString("hex")));
    retries.clear();
    const claimed = await Promise.all(stores.map((s) => claimAllServerMessages(s, 5)));
    assertEachOnce(claimed, expected);
    assert.ok((retries.get("claimServerMessages deadlock") ?? 0) > 0, `conflicts seen: ${JSON.stringify([...retries])}`);
  });
});

describe("schema migrations by servers starting on every Galera node at once", { timeout: 300_000 }, () => {
  // GET_LOCK does not reach across Galera nodes: each step is recognised as done by whichever
  // server gets there second, and conflicts are retried.
  for (const [what, prepare] of [
    ["an empty database", async () => {}],
    [
      "a database Fleetspeak (Go) made",
      async (c: GaleraCluster, name: string) => {
        const admin = await mysql.createConnection({ host: "127.0.0.1", port: c.nodes[0]!.port, user: "root", database: name });
        await admin.query("SET FOREIGN_KEY_CHECKS = 0");
        for (const s of await goMysqlSchemaStatements()) await admin.query(s);
        await admin.end();
        await c.waitSynced();
      },
    ],
  ] as const) {
    it(`brings ${what} to the newest schema, three rounds`, async () => {
      for (let round = 0; round < 3; round++) {
        const { name, c } = await newDatabase();
        await prepare(c, name);
        const stores = await Promise.all(c.nodes.map((node) => MysqlStore.fromDsn(node.dsn(name), { poolSize: 2 })));
        try {
          const admin = await mysql.createConnection({ host: "127.0.0.1", port: c.nodes[2]!.port, user: "root", database: name });
          const [[v]] = await admin.query<RowDataPacket[]>("SELECT MAX(version) AS v, COUNT(*) AS n FROM schema_version");
          const [triggers] = await admin.query<RowDataPacket[]>(
            "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = ? ORDER BY 1",
            [name],
          );
          await admin.end();
          assert.deepEqual({ v: Number(v!.v), n: Number(v!.n) }, { v: latestVersion(MYSQL_MIGRATIONS), n: 1 }, `round ${round}`);
          assert.equal(triggers.length, 2, `round ${round}: ${JSON.stringify(triggers)}`);
          // And the stores work, each on its node.
          const to = randomBytes(8);
          await stores[0]!.storeMessages([message(to)]);
          assert.equal(await stores[1]!.getPendingMessageCount([to]), 1n);
        } finally {
          await Promise.all(stores.map((s) => s.close()));
        }
      }
    });
  }
});
