// A machine's identity survives the switch from Fleetspeak's Go client to ours and back. The
// deployment is made by Fleetspeak's own fleetspeak_config; the state files are written by the
// real Go client (with the nonce its 1-minute sync stores and the revoked serials it fetched from
// the server) and judged by Fleetspeak's own generated Python module; the services sit in the
// configuration directory as Fleetspeak's packages put them (a text Daemon service in
// textservices/, a binary signed one in services/). Every step runs against two witness servers at
// once: ours, and Fleetspeak's Go server on its SQLite datastore. What a user would check is checked
// on the server, through the Admin API: one client per machine, the same ClientID, contacts that
// carry the nonce from the state file, and messages that go round through both daemons.
import assert from "node:assert/strict";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ClientStateStore } from "../../src/client/state.js";
import { randomMessageId } from "../../src/common/ids.js";
import { createLogger } from "../../src/common/log.js";
import { RevokedCertificateListSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { Admin } from "../../src/gen/fleetspeak_server/admin_pb.js";
import { daemonServiceText, tempDir, testDaemonArgv, until } from "../client/support/client-env.js";
import {
  type ClientTree,
  decodeStateFile,
  installClientTree,
  printClientId,
  type ServerKind,
  startGoClient,
  startDeployment,
  startOurClient,
} from "../client/support/fleetspeak-deployment.js";
import { fleetspeakGo } from "../support/fleetspeak-go.js";
import type { GoDeployment } from "../support/go-server.js";
import type { ManagedProcess } from "../support/processes.js";
import { startProcessor, type TestProcessor } from "../support/processor-server.js";

/** Serials the server lists as revoked before the Go client's first start, and one added later. */
const REVOKED_AT_ENROLMENT = ["0badcafe", "7f0123456789abcdef0123456789abcdef012345"];
const REVOKED_LATER = "01";

interface Site {
  kind: ServerKind;
  deployment: GoDeployment;
  processor: TestProcessor;
  server: ManagedProcess;
  admin: Client<typeof Admin>;
  clients: ManagedProcess[];
}

const services = (processor: TestProcessor) => `services {
  name: "TestService"
  factory: "GRPC"
  config { [type.googleapis.com/fleetspeak.grpcservice.Config] { target: "${processor.address}" insecure: true } }
}
`;

/** A text Daemon service in textservices/ and a binary signed one in services/, both echoing. */
function machine(deployment: GoDeployment): ClientTree {
  return installClientTree(deployment, {
    // As GRR's service file: only on a machine that reports Go's label "linux".
    text: {
      "echo.service": `${daemonServiceText("EchoText", testDaemonArgv("echo"))}required_labels { service_name: "client" label: "linux" }\n`,
    },
    signedDaemons: { "echo-signed": { name: "EchoSigned", argv: testDaemonArgv("echo") } },
  });
}

async function storeRevoked(site: Site, serials: string[]): Promise<void> {
  const list = create(RevokedCertificateListSchema, { serials: serials.map((s) => Buffer.from(s, "hex")) });
  await site.admin.storeFile({
    serviceName: "system",
    fileName: "RevokedCertificates",
    data: toBinary(RevokedCertificateListSchema, list),
  });
}

const text = (m: TestProcessor["processed"][number]) =>
  m.data ? Buffer.from(anyUnpack(m.data, BytesValueSchema)?.value ?? []).toString() : "";
const sourceId = (m: TestProcessor["processed"][number]) => Buffer.from(m.source?.clientId ?? []).toString("hex");

/** Waits for both daemons' Hello (sent after `mark`) from the client `id`; they report that ID too. */
async function daemonsSayHello(site: Site, mark: number, id: string): Promise<void> {
  for (const service of ["EchoText", "EchoSigned"]) {
    await until(
      () =>
        site.processor.processed
          .slice(mark)
          .some((m) => m.messageType === "Hello" && m.source?.serviceName === service && sourceId(m) === id),
      60_000,
      `${service}'s Hello from ${id} on the ${site.kind} server`,
    );
  }
  const hellos = site.processor.processed.slice(mark).filter((m) => m.messageType === "Hello" && sourceId(m) === id);
  for (const h of hellos) assert.equal(text(h).split(" ")[0], id, "FLEETSPEAK_CLIENT_ID given to the daemon");
}

/** A message from the server through each daemon and back, for the client `id`. */
async function roundTrip(site: Site, id: string, tag: string): Promise<void> {
  for (const service of ["EchoText", "EchoSigned"]) {
    const payload = `${tag} via ${service} on ${site.kind}`;
    await site.admin.insertMessage({
      messageId: randomMessageId(),
      source: { serviceName: "TestService" },
      destination: { clientId: Buffer.from(id, "hex"), serviceName: service },
      messageType: "Ping",
      data: anyPack(BytesValueSchema, create(BytesValueSchema, { value: Buffer.from(payload) })),
    });
    await until(
      () => site.processor.processed.some((m) => m.messageType === "EchoReply" && text(m) === payload && sourceId(m) === id),
      60_000,
      `the echo of "${payload}"`,
    );
  }
}

async function clientIds(site: Site): Promise<string[]> {
  const { clients } = await site.admin.listClients({});
  return clients.map((c) => Buffer.from(c.clientId).toString("hex")).sort();
}

/** Nonces the server saw the client send (ContactData.sequencing_nonce of each contact). */
async function receivedNonces(site: Site, id: string): Promise<bigint[]> {
  const { contacts } = await site.admin.listClientContacts({ clientId: Buffer.from(id, "hex") });
  return contacts.map((c) => c.receivedNonce);
}

function track(site: Site, p: ManagedProcess): ManagedProcess {
  site.clients.push(p);
  return p;
}

describe("a machine keeps its ClientID between Fleetspeak's Go client and ours", { timeout: 300_000 }, () => {
  const sites: Site[] = [];
  /** Per site: the machine enrolled by Fleetspeak's Go client, its ID, and its Go client. */
  const enrolled = new Map<Site, { tree: ClientTree; id: string; goClient: ManagedProcess }>();
  /** Per site: the machine first started by our client. */
  const ours = new Map<Site, string>();
  const both = async (f: (site: Site) => Promise<void>): Promise<void> => {
    await Promise.all(sites.map(f));
  };

  before(async () => {
    fleetspeakGo();
    for (const kind of ["ours", "go"] as const) {
      const processor = await startProcessor();
      const { deployment, server } = await startDeployment(kind, services(processor));
      const admin = createClient(Admin, createGrpcTransport({ baseUrl: `http://${deployment.adminAddress}` }));
      const site: Site = { kind, deployment, processor, server, admin, clients: [] };
      sites.push(site);
      await storeRevoked(site, REVOKED_AT_ENROLMENT);
      // Fleetspeak writes a new nonce only at its 1-minute sync: start the Go client now, so that
      // the minute passes while the other machine's tests run.
      const tree = machine(deployment);
      const goClient = track(site, startGoClient(`go-client-${kind}`, tree.configFile));
      const [, id] = await goClient.waitFor(/Using new client id: ([0-9a-f]{16})/);
      enrolled.set(site, { tree, id: id!, goClient });
    }
  });

  after(async () => {
    for (const site of sites) {
      for (const c of site.clients) await c.stop();
      await site.server.stop();
      await site.processor.close();
    }
  });

  it("a machine first run by our client (no state file: a new identity) keeps it under Fleetspeak's Go client", () =>
    both(async (site) => {
      const tree = machine(site.deployment);
      let mark = site.processor.processed.length;
      const client = track(site, startOurClient(`our-client-new-${site.kind}`, tree.configFile));
      const [, id] = await client.waitFor(/"clientId":"([0-9a-f]{16})"[^\n]*created a new client identity/);
      await daemonsSayHello(site, mark, id!);
      await roundTrip(site, id!, "new machine, our client");
      assert.equal(await client.stop(), 0);
      const written = decodeStateFile(tree.stateFile);
      assert.deepEqual(written.fields, [1, 7, 8]);
      assert.notEqual(written.sequencingNonce, 0n);
      assert.deepEqual(written.revokedCertSerials, REVOKED_AT_ENROLMENT, "the serials the server lists");

      mark = site.processor.processed.length;
      const goClient = track(site, startGoClient(`go-client-on-ours-${site.kind}`, tree.configFile));
      await goClient.waitFor(new RegExp(`Using client id: ${id}`));
      await daemonsSayHello(site, mark, id!);
      await roundTrip(site, id!, "new machine, back on Fleetspeak");
      assert.equal(await goClient.stop(), 0);
      const { id: goEnrolled } = enrolled.get(site)!;
      assert.deepEqual(await clientIds(site), [goEnrolled, id!].sort(), "no other client appeared on the server");
      ours.set(site, id!);
    }));

  it("Fleetspeak's Go client enrolls, runs both configured daemons and stores key, nonce and revoked serials", () =>
    both(async (site) => {
      const { tree, id, goClient } = enrolled.get(site)!;
      await daemonsSayHello(site, 0, id);
      await roundTrip(site, id, "Fleetspeak's client");
      let state = decodeStateFile(tree.stateFile);
      await until(
        () => {
          state = decodeStateFile(tree.stateFile);
          return state.sequencingNonce !== 0n;
        },
        120_000,
        "Fleetspeak's 1-minute state sync to store a nonce",
      );
      assert.deepEqual(state.fields, [1, 7, 8]);
      assert.deepEqual(state.revokedCertSerials, REVOKED_AT_ENROLMENT);
      assert.equal(await goClient.stop(), 0);
    }));

  it("our client reads the Go client's state file: same ClientID, nonce and revoked serials", () =>
    both(async (site) => {
      const { tree, id } = enrolled.get(site)!;
      const copy = join(tempDir(), "copy.state");
      copyFileSync(tree.stateFile, copy);
      const goState = decodeStateFile(copy);
      const state = new ClientStateStore({ stateFile: copy, resetState: false, log: createLogger("test") });
      assert.equal(state.clientIdHex, id);
      assert.equal(state.sequencingNonce, goState.sequencingNonce);
      for (const s of REVOKED_AT_ENROLMENT) assert.ok(state.isRevoked(s), `serial ${s} is revoked`);
    }));

  it("our client started on the Go client's config and state connects as the same client, services unchanged", () =>
    both(async (site) => {
      const { tree, id } = enrolled.get(site)!;
      const goState = decodeStateFile(tree.stateFile);
      // The server now lists another serial: the state file ours writes must keep the old ones,
      // which only the Go client's state file still holds.
      await storeRevoked(site, [REVOKED_LATER]);
      assert.equal(printClientId(tree.configFile).stdout, `${id}\n`, "what an operator checks before the switch");
      const mark = site.processor.processed.length;
      const client = track(site, startOurClient(`our-client-${site.kind}`, tree.configFile));
      const [, started] = await client.waitFor(/"clientId":"([0-9a-f]{16})"[^\n]*client started/);
      assert.equal(started, id);
      assert.doesNotMatch(client.output(), /created a new client identity/);
      await daemonsSayHello(site, mark, id);
      await roundTrip(site, id, "our client on Fleetspeak's state");
      assert.ok(
        (await receivedNonces(site, id)).includes(goState.sequencingNonce),
        "our client sent the nonce from Fleetspeak's state file",
      );
      assert.deepEqual(await clientIds(site), [id, ours.get(site)!].sort(), "still one client for this machine");
      await client.waitFor(/revoked server certificate serials updated/);
      assert.equal(await client.stop(), 0);

      const written = decodeStateFile(tree.stateFile);
      assert.deepEqual(written.fields, [1, 7, 8]);
      assert.equal(written.clientKey, goState.clientKey, "the key is written back byte for byte");
      assert.deepEqual(written.revokedCertSerials.sort(), [...REVOKED_AT_ENROLMENT, REVOKED_LATER].sort());
      assert.notEqual(written.sequencingNonce, 0n);
    }));

  it("rollback: Fleetspeak's Go client started on the state file ours wrote keeps the ClientID", () =>
    both(async (site) => {
      const { tree, id } = enrolled.get(site)!;
      const oursWrote = decodeStateFile(tree.stateFile);
      const mark = site.processor.processed.length;
      const goClient = track(site, startGoClient(`go-client-rollback-${site.kind}`, tree.configFile));
      await goClient.waitFor(new RegExp(`Using client id: ${id}`));
      await daemonsSayHello(site, mark, id);
      await roundTrip(site, id, "back on Fleetspeak");
      assert.ok(
        (await receivedNonces(site, id)).includes(oursWrote.sequencingNonce),
        "Fleetspeak's client sent the nonce our client stored",
      );
      assert.deepEqual(await clientIds(site), [id, ours.get(site)!].sort());
      assert.equal(await goClient.stop(), 0);
      // Fleetspeak appends the serials it read to the very list it read them from, so each start
      // of its client repeats them in the file; the set is what counts.
      const goWrote = decodeStateFile(tree.stateFile);
      const once = [...new Set(goWrote.revokedCertSerials)].sort();
      assert.deepEqual(once, oursWrote.revokedCertSerials.sort());
      assert.ok(goWrote.revokedCertSerials.length > once.length, "Fleetspeak repeats them (docs/upgrading.md says so)");
      // Ours reads the repeated list and keeps each serial once.
      const copy = join(tempDir(), "copy.state");
      copyFileSync(tree.stateFile, copy);
      const reread = new ClientStateStore({ stateFile: copy, resetState: false, log: createLogger("test") });
      reread.markDirty();
      reread.write();
      assert.deepEqual(decodeStateFile(copy).revokedCertSerials.sort(), once);
    }));
});
