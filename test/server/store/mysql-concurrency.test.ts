// Several servers claiming from one MariaDB database at the same moment: separate stores with
// their own pools, one of them in a child process. No message may be handed out twice while its
// lease holds, and every message must be handed out.
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { AddressSchema, type Message, MessageSchema } from "../../../src/gen/fleetspeak/common_pb.js";
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { createTestDatabase, type TestDatabase } from "../../support/mariadb.js";
import { claimAllClientMessages, claimAllServerMessages } from "./claim-loops.js";

const MESSAGES = 10_000;
const CLIENTS = 40;
const IN_PROCESS_CLAIMERS = 3;

function message(to: Uint8Array): Message {
  return create(MessageSchema, {
    messageId: randomBytes(32),
    source: create(AddressSchema, { serviceName: "admin" }),
    destination: create(AddressSchema, { clientId: to, serviceName: "svc" }),
    messageType: "T",
    creationTime: timestampNow(),
  });
}

/** Starts a claimer process and waits until it is connected; `go` releases it. */
async function childClaimer(dsn: string, args: string[]) {
  const script = fileURLToPath(new URL("./claimer-process.ts", import.meta.url));
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, ["--import", "tsx", script, dsn, ...args], {
    env: { ...process.env, FLEETSPEAK_LOG_LEVEL: "warn" },
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    err += d;
  });
  const exited = once(child, "exit");
  while (!out.includes("ready\n")) {
    await Promise.race([once(child.stdout, "data"), exited.then(() => assert.fail(`claimer exited: ${err}`))]);
  }
  return {
    go: () => child.stdin.end("go\n"),
    result: async (): Promise<string[]> => {
      const [code] = await exited;
      assert.equal(code, 0, `claimer process failed: ${err}`);
      return JSON.parse(out.slice(out.indexOf("ready\n") + 6).trim()) as string[];
    },
  };
}

function assertEachOnce(claimed: string[][], expected: Set<string>): void {
  const all = claimed.flat();
  const seen = new Set<string>();
  const twice: string[] = [];
  for (const id of all) {
    if (seen.has(id)) twice.push(id);
    seen.add(id);
  }
  assert.deepEqual(twice, [], `${twice.length} messages were claimed twice`);
  assert.equal(seen.size, expected.size);
  for (const id of expected) assert.ok(seen.has(id), `message ${id} was never claimed`);
  for (const part of claimed) assert.ok(part.length > 0, "a claimer got nothing; the test did not exercise contention");
}

describe("MySQL claims by concurrent servers", { timeout: 120_000 }, () => {
  let db: TestDatabase;
  let stores: MysqlStore[];

  before(async () => {
    db = await createTestDatabase();
    stores = [];
    for (let i = 0; i < IN_PROCESS_CLAIMERS; i++) stores.push(await MysqlStore.fromDsn(db.dsn, { poolSize: 4 }));
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await db.drop();
  });

  it(`hands each of ${MESSAGES} client messages to exactly one claimer`, async () => {
    const clients = Array.from({ length: CLIENTS }, () => randomBytes(8));
    const msgs = Array.from({ length: MESSAGES }, (_, i) => message(clients[i % CLIENTS]!));
    for (let i = 0; i < msgs.length; i += 100) await stores[0]!.storeMessages(msgs.slice(i, i + 100));
    const expected = new Set(msgs.map((m) => Buffer.from(m.messageId).toString("hex")));

    const child = await childClaimer(db.dsn, ["client", clients.map((c) => c.toString("hex")).join(",")]);
    child.go();
    // Two claimers walk the clients in one order, the others in reverse, so they meet head-on.
    const reversed = [...clients].reverse();
    const local = await Promise.all(
      stores.map((s, i) => claimAllClientMessages(s, i % 2 === 0 ? reversed : clients)),
    );
    assertEachOnce([...local, await child.result()], expected);
  });

  it("does not hide one client's due messages from a claim running for another client", async () => {
    // Each client's rows sit next to other clients' rows in the (destination, due time) index; a
    // claim must lock only its own client's rows, or a concurrent SKIP LOCKED claim for the
    // neighbouring client would pass over due messages.
    const clients = Array.from({ length: 300 }, () => randomBytes(8));
    const msgs = clients.flatMap((c) => [message(c), message(c), message(c)]);
    for (let i = 0; i < msgs.length; i += 100) await stores[0]!.storeMessages(msgs.slice(i, i + 100));
    for (let round = 0; round < 3; round++) {
      const got = await Promise.all(
        clients.map((c, i) => stores[i % stores.length]!.claimClientMessages(c, { limit: 100, leaseMs: 150 })),
      );
      const short = got.filter((g) => g.length !== 3).length;
      assert.equal(short, 0, `round ${round}: ${short} of ${clients.length} claims missed due messages`);
      await new Promise((r) => setTimeout(r, 300));
    }
  });

  it(`hands each of ${MESSAGES} backlogged server messages to exactly one claimer`, async () => {
    const msgs = Array.from({ length: MESSAGES }, () => message(new Uint8Array(0)));
    for (let i = 0; i < msgs.length; i += 100) {
      await stores[0]!.storeMessages(msgs.slice(i, i + 100), { serverDueMs: Date.now() - 1000 });
    }
    const expected = new Set(msgs.map((m) => Buffer.from(m.messageId).toString("hex")));
    const child = await childClaimer(db.dsn, ["server"]);
    child.go();
    const local = await Promise.all(stores.map((s) => claimAllServerMessages(s)));
    assertEachOnce([...local, await child.result()], expected);
  });
});
