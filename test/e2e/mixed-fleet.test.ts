// A rolling upgrade caught in the middle: the real Fleetspeak (Go) server and ours, both with
// frontend and admin components, on one MariaDB database with HTTP notifications, clients of both
// kinds on both frontends. Messages inserted through either admin server reach clients on either
// frontend; nothing is handed out twice by our frontend; broadcast limits hold across both. Last,
// ours restarts with worker processes notified at their own ports (worker_notification_port), and
// Fleetspeak's admin server notifies those workers directly.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { anyPack, StringValueSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { RowDataPacket } from "mysql2/promise";
import { AddressSchema, LabelSchema, MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { BroadcastSchema } from "../../src/gen/fleetspeak_server/broadcasts_pb.js";
import { installClientTree, startGoClient, startOurClient } from "../client/support/fleetspeak-deployment.js";
import { type GoDeployment, goComponentsConfig, makeGoDeployment, startGoServer } from "../support/go-server.js";
import { freePort, freePortRange } from "../support/haproxy.js";
import { adminConnection, createTestDatabase, type TestDatabase } from "../support/mariadb.js";
import { type ManagedProcess, startServerProcess } from "../support/processes.js";

const SERVICES = `broadcast_poll_time { seconds: 1 }\n`;
const NOOP_SERVICE = `name: "NOOPService"\nfactory: "NOOP"\n`;
const MESSAGES = 48;

interface Machine {
  name: string;
  client: "go" | "ours";
  frontend: "go" | "ours";
  proc: ManagedProcess;
  clientId?: string;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** Polls `ok` until it holds; fails with `what()` after `timeoutMs`. */
async function waitUntil(ok: () => Promise<boolean>, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) assert.fail(`waited ${timeoutMs} ms for ${what()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function adminOf(address: string): Client<typeof Admin> {
  return createClient(Admin, createGrpcTransport({ baseUrl: `http://${address}` }));
}

describe("a mixed fleet: Fleetspeak (Go) and this server on one MySQL database", () => {
  let db: TestDatabase;
  let deployment: GoDeployment;
  let goServer: ManagedProcess;
  let ourServer: ManagedProcess;
  let goAdmin: Client<typeof Admin>;
  let ourAdmin: Client<typeof Admin>;
  let ourHttps: string;
  let ourComponents: string;
  const machines: Machine[] = [];

  /** Rows of a query on the test database. */
  async function rows(sql: string, values: unknown[] = []): Promise<RowDataPacket[]> {
    const c = await adminConnection();
    try {
      await c.query(`USE \`${db.name}\``);
      return (await c.query<RowDataPacket[]>(sql, values))[0];
    } finally {
      await c.end();
    }
  }

  before(async () => {
    db = await createTestDatabase();
    deployment = await makeGoDeployment(db.dsn, "mixed");
    goServer = await startGoServer(deployment, SERVICES);
    // Ours: the same components config (certificates, database) on its own ports.
    ourHttps = `127.0.0.1:${await freePort()}`;
    const ourNotify = `127.0.0.1:${await freePort()}`;
    const ourAdminAddress = `127.0.0.1:${await freePort()}`;
    ourComponents = goComponentsConfig(deployment)
      .replaceAll(deployment.httpsAddress, ourHttps)
      .replaceAll(deployment.notificationAddress, ourNotify)
      .replaceAll(deployment.adminAddress, ourAdminAddress);
    ourServer = await startServerProcess({ name: "our-server", components: ourComponents, services: SERVICES });
    goAdmin = adminOf(deployment.adminAddress);
    ourAdmin = adminOf(ourAdminAddress);

    const goPort = deployment.httpsAddress.split(":")[1]!;
    const ourPort = ourHttps.split(":")[1]!;
    for (const client of ["go", "ours"] as const) {
      for (const frontend of ["go", "ours"] as const) {
        for (const n of [1, 2]) {
          const name = `${client}-client-${n}-on-${frontend}-frontend`;
          const tree = installClientTree(deployment, { text: { "noop.service": NOOP_SERVICE } });
          if (frontend === "ours") {
            const text = readFileSync(tree.configFile, "utf8");
            writeFileSync(tree.configFile, text.replace(`localhost:${goPort}`, `localhost:${ourPort}`));
          }
          const proc = client === "go" ? startGoClient(name, tree.configFile) : startOurClient(name, tree.configFile);
          machines.push({ name, client, frontend, proc });
        }
      }
    }
    // Every client streaming, each to the frontend it dials.
    await waitUntil(
      async () => (await ourAdmin.listClients({})).clients.filter((c) => c.lastContactStreamingTo !== "").length === machines.length,
      90_000,
      () => `every client streaming; outputs:\n${machines.map((m) => `${m.name}: ${m.proc.output().slice(-1500)}`).join("\n")}`,
    );
  });

  after(async () => {
    await Promise.all(machines.map((m) => m.proc.stop("SIGTERM", 5000)));
    await ourServer?.stop("SIGTERM", 15_000);
    await goServer?.stop("SIGTERM", 15_000);
    await db?.drop();
  });

  it("delivers messages from either admin server to clients on either frontend, once through ours", async () => {
    const { clients } = await ourAdmin.listClients({});
    // Which client streams to which frontend: the notification address each one recorded.
    const byFrontend = new Map<string, string[]>();
    for (const c of clients) {
      const list = byFrontend.get(c.lastContactStreamingTo) ?? [];
      list.push(hex(c.clientId));
      byFrontend.set(c.lastContactStreamingTo, list);
    }
    assert.equal(byFrontend.size, 2, `clients stream to both frontends: ${[...byFrontend.keys()].join(", ")}`);
    const ids = clients.map((c) => c.clientId);
    const sent: { id: string; via: string; to: string }[] = [];
    for (let i = 0; i < MESSAGES; i++) {
      const to = ids[i % ids.length]!;
      const id = randomBytes(32);
      const via = i % 2 === 0 ? "go" : "ours";
      await (via === "go" ? goAdmin : ourAdmin).insertMessage(
        create(MessageSchema, {
          messageId: id,
          source: create(AddressSchema, { serviceName: "GRR" }),
          destination: create(AddressSchema, { clientId: to, serviceName: "NOOPService" }),
          messageType: "Mixed",
          creationTime: timestampFromMs(Date.now()),
          data: anyPack(StringValueSchema, create(StringValueSchema, { value: `m${i}` })),
        }),
      );
      sent.push({ id: hex(id), via, to: hex(to) });
    }
    let left = sent;
    await waitUntil(
      async () => {
        const status = await Promise.all(left.map((s) => ourAdmin.getMessageStatus({ messageId: Buffer.from(s.id, "hex") })));
        left = left.filter((_, i) => !status[i]!.result);
        return left.length === 0;
      },
      60_000,
      () => `${left.length} of ${sent.length} messages delivered: ${JSON.stringify(left.slice(0, 5))} are not`,
    );
    // Each hand-out of a message to a client links it to that client's contact: a message linked
    // more than once was handed out more than once.
    const twice = await rows(
      `SELECT LOWER(HEX(message_id)) AS id, COUNT(*) AS n FROM client_contact_messages
       WHERE message_id IN (?) GROUP BY message_id HAVING n > 1`,
      [sent.map((s) => Buffer.from(s.id, "hex"))],
    );
    const ourFrontendClients = new Set(
      clients.filter((c) => c.lastContactStreamingTo !== deployment.notificationAddress).map((c) => hex(c.clientId)),
    );
    const twiceThroughOurs = twice.filter((r) => ourFrontendClients.has(sent.find((s) => s.id === r.id)!.to));
    assert.deepEqual(twiceThroughOurs, [], "our frontend hands a message out once");
    process.stdout.write(
      `# mixed fleet: ${sent.length} messages delivered; handed out more than once (by Fleetspeak's frontend): ${twice.length}\n`,
    );
  });

  it("holds a broadcast's limit across both servers, whichever creates it", async () => {
    for (const [who, admin, limit] of [
      ["go", goAdmin, 3n],
      ["ours", ourAdmin, 5n],
    ] as const) {
      const broadcastId = randomBytes(8);
      await admin.createBroadcast({
        broadcast: create(BroadcastSchema, {
          broadcastId,
          source: create(AddressSchema, { serviceName: "GRR" }),
          destination: create(AddressSchema, { serviceName: "NOOPService" }),
          messageType: `Broadcast-from-${who}`,
          requiredLabels: [create(LabelSchema, { serviceName: "client", label: "linux" })],
        }),
        limit,
      });
      const sentTo = async () =>
        Number((await rows("SELECT COUNT(*) AS n FROM broadcast_sent WHERE broadcast_id = ?", [broadcastId]))[0]!.n);
      await waitUntil(async () => (await sentTo()) >= Number(limit), 60_000, () => `broadcast from ${who} sent to ${limit} clients`);
      // A few more broadcast polls of both servers: nobody goes past the limit.
      await new Promise((r) => setTimeout(r, 4000));
      assert.equal(await sentTo(), Number(limit), `broadcast from ${who}`);
      const delivered = await rows("SELECT COUNT(*) AS n FROM messages WHERE message_type = ?", [`Broadcast-from-${who}`]);
      assert.equal(Number(delivered[0]!.n), Number(limit));
    }
  });

  it("with worker_notification_port, Fleetspeak's admin server notifies our workers at their own ports", async () => {
    await ourServer.stop("SIGTERM", 15_000);
    const goLogBefore = goServer.output().length;
    const first = await freePortRange(2);
    const workerAddresses = [`127.0.0.1:${first}`, `127.0.0.1:${first + 1}`];
    ourServer = await startServerProcess({
      name: "our-server-worker-ports",
      components: `${ourComponents}\nworker_processes: 2\nworker_notification_port: ${first}\n`,
      services: SERVICES,
    });
    // The clients of our frontend stream again, each recorded at the port of the worker holding it.
    const onOurs = machines.filter((m) => m.frontend === "ours").length;
    let ours: Uint8Array[] = [];
    await waitUntil(
      async () => {
        const { clients } = await ourAdmin.listClients({});
        ours = clients.filter((c) => workerAddresses.includes(c.lastContactStreamingTo)).map((c) => c.clientId);
        return ours.length === onOurs;
      },
      90_000,
      () => `${onOurs} clients streaming to our workers' ports, ${ours.length} are`,
    );
    const sent: Buffer[] = [];
    for (let i = 0; i < 12; i++) {
      const id = randomBytes(32);
      await goAdmin.insertMessage(
        create(MessageSchema, {
          messageId: id,
          source: create(AddressSchema, { serviceName: "GRR" }),
          destination: create(AddressSchema, { clientId: ours[i % ours.length]!, serviceName: "NOOPService" }),
          messageType: "ToWorkers",
          creationTime: timestampFromMs(Date.now()),
          data: anyPack(StringValueSchema, create(StringValueSchema, { value: `w${i}` })),
        }),
      );
      sent.push(id);
    }
    let left = sent;
    await waitUntil(
      async () => {
        const status = await Promise.all(left.map((messageId) => ourAdmin.getMessageStatus({ messageId })));
        left = left.filter((_, i) => !status[i]!.result);
        return left.length === 0;
      },
      60_000,
      () => `${left.length} of ${sent.length} messages from Fleetspeak's admin server delivered by our workers`,
    );
    // Fleetspeak's admin server notifies the address recorded for the client (here a worker's own
    // port) after storing the message, and logs a warning when that fails; none may appear.
    const goLog = goServer.output().slice(goLogBefore);
    assert.doesNotMatch(goLog, /Failure trying to notify/, "Fleetspeak's notifications reached our workers");
  });
});
