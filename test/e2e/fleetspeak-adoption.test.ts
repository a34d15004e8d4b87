// Switching an existing Fleetspeak (Go) deployment to this server in place, and back: a database
// made by the real Fleetspeak server and clients (test/support/go-fixture.ts) is served by our
// server from the same components config, checked row kind by row kind through the Admin API, its
// pending messages and owed broadcasts delivered to the machines' clients; then Fleetspeak's own
// server takes the database back and serves everything, including what our server changed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack, StringValueSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { AddressSchema, MessageSchema } from "../../src/gen/fleetspeak/common_pb.js";
import { DAEMON_SERVICE } from "../support/go-fixture-clients.js";
import {
  adminClient,
  buildGoFixture,
  checkFixture,
  deliverPending,
  fixtureMakeDue,
  type GoFixture,
  type GoFixtureExpected,
  goFixtureServices,
  type RunningGoServer,
  startGoFixtureServer,
} from "../support/go-fixture.js";
import { pollUntil } from "../support/go-fixture-poll.js";
import { goComponentsConfig } from "../support/go-server.js";
import { type ManagedProcess, startServerProcess } from "../support/processes.js";
import { startProcessor, type TestProcessor } from "../support/processor-server.js";

const ROOT = resolve(import.meta.dirname, "../..");
const DEFAULT_COMPONENTS = "/etc/fleetspeak-server/server.components.config";

/**
 * The fleetspeak-server / fleetspeak-admin command lines that docs/upgrading.md gives in the
 * section under `heading`, as argument lists (comments dropped): the test runs what the guide says.
 */
function documented(heading: string, tool: "fleetspeak-server" | "fleetspeak-admin"): string[][] {
  const doc = readFileSync(join(ROOT, "docs/upgrading.md"), "utf8");
  const start = doc.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `docs/upgrading.md has a section "${heading}"`);
  const end = doc.indexOf("\n## ", start + 1);
  const section = doc.slice(start, end < 0 ? undefined : end);
  const commands = [...section.matchAll(/```sh\n([\s\S]*?)```/g)]
    .flatMap((m) => m[1]!.split("\n"))
    .map((l) => l.replace(/#.*$/, "").trim())
    .filter((l) => l.startsWith(`${tool} `))
    .map((l) => l.split(/\s+/).slice(1));
  assert.ok(commands.length > 0, `docs/upgrading.md, "${heading}": no ${tool} command`);
  return commands;
}

/** A documented command with the guide's paths and placeholders replaced by the test's. */
function adapt(args: string[], replacements: Record<string, string>): string[] {
  return args.map((a) => replacements[a] ?? a);
}

/** Our fleetspeak-server binary, run to its end. */
function ourServerCli(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [join(ROOT, "bin/fleetspeak-server.js"), ...args], {
    encoding: "utf8",
    timeout: 120_000,
    env: { ...process.env, FLEETSPEAK_LOG_LEVEL: "warn" },
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const variants = [
  // A MySQL deployment stopped cleanly; back to Fleetspeak with no step at all.
  { backend: "mysql", stop: "sigterm", client: "go", back: "as it is" },
  // Fleetspeak's SQLite datastore: converted by `migrate`, back by `migrate --to-fleetspeak`; our
  // client on the machines.
  { backend: "sqlite", stop: "sigterm", client: "ours", back: "migrate --to-fleetspeak" },
  // A MySQL deployment whose server died (a broadcast allocation left open); back after
  // `migrate --to-fleetspeak` removed our additions.
  { backend: "mysql", stop: "sigkill", client: "go", back: "migrate --to-fleetspeak" },
] as const;

for (const v of variants) {
  describe(`a Fleetspeak (Go) ${v.backend} deployment (server stopped by ${v.stop}) switched to this server and back (${v.back})`, {
    timeout: 420_000,
  }, () => {
    let fixture: GoFixture;
    let processor: TestProcessor;
    let ours: ManagedProcess | undefined;
    let go: RunningGoServer | undefined;
    let expected: GoFixtureExpected;
    let releaseProcessor: () => void = () => {};
    let restoreFiles: GoFixtureExpected["files"] = [];

    const checkOptions = (server: "go" | "ours") => ({
      server,
      backend: v.backend,
      frontend: fixture.deployment.httpsAddress,
      caPem: fixture.caPem,
    });
    const components = () => fixture.deployment.componentsConfigPath;

    before(async () => {
      fixture = await buildGoFixture({ backend: v.backend, stop: v.stop });
      expected = fixture.expected;
      // The Processor (GRR's side) holds its calls until the first check is done, so that our
      // server's retry of the due server-bound message does not race it.
      const held = new Promise<void>((r) => {
        releaseProcessor = r;
      });
      processor = await startProcessor({ handle: () => held });
    });

    after(async () => {
      releaseProcessor();
      await ours?.stop("SIGTERM", 15_000);
      await go?.stop().catch(() => {});
      await processor?.close();
      await fixture?.cleanup();
    });

    if (v.backend === "sqlite") {
      it("refuses to start on Fleetspeak's SQLite file, naming the command that converts it, and converts it", () => {
        const services = join(fixture.dir, "ours.services.config");
        writeFileSync(services, goFixtureServices(processor.address));
        const refused = ourServerCli(["-components_config", components(), "-services_config", services]);
        assert.equal(refused.status, 1, refused.out);
        assert.match(refused.out, /Fleetspeak's \(Go\) own SQLite datastore; stop Fleetspeak, back the file up, and convert it in place with: fleetspeak-server migrate/);
        const [migrate] = documented("Upgrading a single server (SQLite)", "fleetspeak-server");
        const converted = ourServerCli(adapt(migrate!, { [DEFAULT_COMPONENTS]: components() }));
        assert.equal(converted.status, 0, converted.out);
        assert.match(converted.out, /converted .* from Fleetspeak's \(Go\) SQLite layout/);
        // Fleetspeak stored the file "0123" as the number 123 (its column's affinity): the
        // conversion names it, and the operator stores it again under its real name.
        const numeric = fixture.expected.files.filter((f) => /^\d+$/.test(f.name) && String(Number(f.name)) !== f.name);
        assert.ok(numeric.length > 0, "the fixture has a file whose name Fleetspeak keeps as a number");
        for (const f of numeric) assert.match(converted.out, new RegExp(`stored the names of these files as numbers.*${f.service}/${Number(f.name)}`));
        restoreFiles = numeric;
      });
    }

    it("starts on the same components config and serves every row as Fleetspeak did", async () => {
      ours = await startServerProcess({
        name: "our-server",
        components: goComponentsConfig(fixture.deployment),
        services: goFixtureServices(processor.address),
      });
      if (v.backend === "mysql") assert.match(ours.output(), /adopting a database made by Fleetspeak \(Go\)/);
      for (const f of restoreFiles) {
        await adminClient(fixture.deployment.adminAddress).storeFile({ serviceName: f.service, fileName: f.name, data: f.data });
      }
      assert.deepEqual(await checkFixture(fixture.deployment.adminAddress, expected, checkOptions("ours")), []);
    });

    it("answers the checks docs/upgrading.md gives (fleetspeak-admin listclients, pendingcount)", () => {
      const owed = expected.clients.find((c) =>
        expected.messages.some((m) => m.destination.clientId === c.clientId && m.status.kind === "pending"),
      )!;
      const pending = expected.messages.filter((m) => m.destination.clientId === owed.clientId && m.status.kind === "pending");
      for (const args of documented(`Upgrading a single server (${v.backend === "mysql" ? "MySQL" : "SQLite"})`, "fleetspeak-admin")) {
        const r = spawnSync(
          process.execPath,
          [join(ROOT, "bin/fleetspeak-admin.js"), "--admin_addr", fixture.deployment.adminAddress, ...adapt(args, { CLIENT_ID: owed.clientId })],
          { encoding: "utf8", timeout: 60_000 },
        );
        assert.equal(r.status, 0, `${args.join(" ")}: ${r.stderr}`);
        if (args[0] === "listclients") for (const c of expected.clients) assert.match(r.stdout, new RegExp(c.clientId));
        if (args[0] === "pendingcount") assert.match(r.stdout, new RegExp(`\\b${pending.length}\\b`));
      }
    });

    it("forwards the due server-bound message to the Processor, and only that one", async () => {
      const due = expected.messages.filter(
        (m) => m.destination.clientId === "" && m.status.kind === "pending" && m.status.due,
      );
      assert.equal(due.length, 1);
      releaseProcessor();
      await pollUntil("the due message at the Processor", () => processor.processed.length >= 1, { watch: [ours!] });
      assert.deepEqual(
        processor.processed.map((m) => Buffer.from(m.messageId).toString("hex")),
        due.map((m) => m.messageId),
      );
      due[0]!.status = { kind: "processed" };
    });

    it(`delivers the pending messages and owed broadcasts to ${v.client === "go" ? "Fleetspeak's" : "our"} clients, same IDs`, async () => {
      const delivered = await deliverPending(expected, {
        adminAddress: fixture.deployment.adminAddress,
        frontend: fixture.publicAddress,
        client: v.client,
        makeDue: fixtureMakeDue(fixture),
      });
      expected = delivered.expected;
      assert.ok(Object.keys(delivered.received).length >= 2, JSON.stringify(delivered.received));
      assert.deepEqual(await checkFixture(fixture.deployment.adminAddress, expected, checkOptions("ours")), []);
    });

    it(`is taken back by Fleetspeak (Go) (${v.back}), which serves everything, our changes included`, async () => {
      assert.equal(await ours!.stop("SIGTERM", 20_000), 0, ours!.output().slice(-3000));
      ours = undefined;
      if (v.back === "migrate --to-fleetspeak") {
        const [command] = documented("Rolling back", "fleetspeak-server");
        const back = ourServerCli(adapt(command!, { [DEFAULT_COMPONENTS]: components() }));
        assert.equal(back.status, 0, back.out);
      }
      go = await startGoFixtureServer(fixture.deployment, processor.address);
      assert.deepEqual(await checkFixture(go.adminAddress, expected, checkOptions("go")), []);
    });

    it("and Fleetspeak delivers a new message through its own admin server to a machine", async () => {
      const alpha = expected.clients.find((c) => c.name === "alpha")!;
      const id = randomBytes(32);
      const data = anyPack(StringValueSchema, create(StringValueSchema, { value: "after the round trip" }));
      const creationTime = timestampFromMs(Date.now());
      await adminClient(go!.adminAddress).insertMessage(
        create(MessageSchema, {
          messageId: id,
          source: create(AddressSchema, { serviceName: DAEMON_SERVICE }),
          destination: create(AddressSchema, { clientId: Buffer.from(alpha.clientId, "hex"), serviceName: DAEMON_SERVICE }),
          messageType: "AfterRollback",
          creationTime,
          data,
        }),
      );
      const withNew: GoFixtureExpected = {
        ...expected,
        messages: [
          ...expected.messages,
          {
            name: "inserted after the rollback",
            messageId: id.toString("hex"),
            source: { clientId: "", serviceName: DAEMON_SERVICE },
            destination: { clientId: alpha.clientId, serviceName: DAEMON_SERVICE },
            messageType: "AfterRollback",
            creationTime: { seconds: creationTime.seconds, nanos: creationTime.nanos },
            status: { kind: "pending", retryCount: 0, scheduledTimeUs: 0n, due: true },
            data,
          },
        ],
      };
      const delivered = await deliverPending(withNew, {
        adminAddress: go!.adminAddress,
        frontend: fixture.publicAddress,
        client: "go",
        machines: ["alpha"],
        makeDue: fixtureMakeDue(fixture),
      });
      assert.ok(
        delivered.received.alpha?.some((m) => m.messageId === id.toString("hex")),
        JSON.stringify(delivered.received),
      );
    });
  });
}
