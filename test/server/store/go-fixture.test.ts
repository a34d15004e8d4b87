// The Go fixture is what it claims: a database made by the real Fleetspeak (Go) server and clients
// on MySQL (MariaDB) and on SQLite, which Fleetspeak's own server, started again on it, serves as
// the fixture describes; whose due server-bound message it retries when the Processor answers;
// and whose pending messages and owed broadcasts reach the machines' clients (Fleetspeak's own
// client, or ours, on the state files Fleetspeak's client wrote). One variant's Go server was
// killed instead of stopped, leaving broadcast allocations open. The adoption tests check our
// server against the same descriptions.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  buildGoFixture,
  checkFixture,
  deliverPending,
  fixtureMakeDue,
  type GoFixture,
  type RunningGoServer,
  startGoFixtureServer,
} from "../../support/go-fixture.js";
import { pollUntil } from "../../support/go-fixture-poll.js";
import { startProcessor, type TestProcessor } from "../../support/processor-server.js";

const variants = [
  { backend: "mysql", stop: "sigterm", client: "go" },
  { backend: "sqlite", stop: "sigterm", client: "ours" },
  { backend: "sqlite", stop: "sigkill", client: "go" },
] as const;

for (const { backend, stop, client } of variants) {
  describe(`Go fixture on ${backend}, its server stopped by ${stop}`, { timeout: 300_000 }, () => {
    let fixture: GoFixture;
    let processor: TestProcessor;
    let server: RunningGoServer | undefined;
    let release: () => void = () => {};

    before(async () => {
      const t0 = Date.now();
      fixture = await buildGoFixture({ backend, stop });
      console.log(`# Go fixture on ${backend} (${stop}) built in ${Date.now() - t0} ms`);
      // The Processor holds its calls until the test lets it answer, so that the server's retry
      // of the due server-bound message does not race the first check.
      const held = new Promise<void>((r) => {
        release = r;
      });
      processor = await startProcessor({ handle: () => held });
      server = await startGoFixtureServer(fixture.deployment, processor.address);
    });

    after(async () => {
      release();
      await server?.stop();
      await processor?.close();
      await fixture?.cleanup();
    });

    const checkOptions = () => ({
      server: "go" as const,
      backend,
      frontend: fixture.deployment.httpsAddress,
      caPem: fixture.caPem,
    });

    it("holds every kind of row, edge cases included", () => {
      const e = fixture.expected;
      const kinds = e.messages.map((m) => (m.status.kind === "pending" ? `pending retry ${m.status.retryCount}${m.status.due ? " due" : ""}` : m.status.kind));
      for (const k of ["processed", "failed", "pending retry 0 due", "pending retry 1 due", "pending retry 1", "pending retry 2"]) {
        assert.ok(kinds.includes(k), `a message ${k}`);
      }
      assert.ok(e.clients.some((c) => c.blacklisted), "a blacklisted client");
      assert.ok(e.clients.some((c) => !c.hasContacts), "a client without contacts");
      assert.ok(e.broadcasts.some((b) => b.sent === b.limit), "a broadcast at its limit");
      if (stop === "sigkill") assert.ok(e.broadcasts.some((b) => b.allocations.length > 0), "an allocation left open");
      assert.ok(e.broadcasts.some((b) => b.expirationTime && b.sent > 0n), "an expired broadcast that was sent");
      assert.ok(e.broadcasts.filter((b) => b.active).length >= 2, "active broadcasts");
      assert.ok(e.files.some((f) => f.data.length === 0) && e.files.some((f) => f.data.length > 65_535), "an empty and a large file");
      assert.ok(e.clients.some((c) => c.resourceUsage.length > 0), "resource-usage records");
    });

    it("is served by Fleetspeak (Go) as described", async () => {
      assert.deepEqual(await checkFixture(server!.adminAddress, fixture.expected, checkOptions()), []);
    });

    it("names each difference when the server does not show the fixture", async () => {
      const e = fixture.expected;
      const alpha = e.clients.find((c) => c.name === "alpha")!;
      const processed = e.messages.find((m) => m.status.kind === "processed")!;
      const pending = e.messages.find((m) => m.status.kind === "pending" && m.data && m.destination.clientId !== "")!;
      const active = e.broadcasts.find((b) => b.active)!;
      const file = e.files.find((f) => f.data.length > 0)!;
      const wrong = {
        ...e,
        clients: e.clients.map((c) =>
          c === alpha
            ? {
                ...c,
                labels: [...c.labels, "zz-not-there"],
                blacklisted: true,
                contacts: [{ ...c.contacts[0]!, sentNonce: c.contacts[0]!.sentNonce + 1n }],
                resourceUsage: [{ ...c.resourceUsage[0]!, pid: -1n }],
              }
            : c,
        ),
        messages: e.messages.map((m) =>
          m === processed
            ? { ...m, status: { kind: "pending" as const, retryCount: 0, scheduledTimeUs: 0n, due: true } }
            : m === pending
              ? { ...m, annotations: [["flow_id", "F:WRONG"] as [string, string]] }
              : m,
        ),
        broadcasts: e.broadcasts.map((b) => (b === active ? { ...b, labels: ["other"] } : b)),
        files: e.files.map((f) => (f === file ? { ...f, data: Buffer.concat([f.data, Buffer.from("x")]) } : f)),
      };
      const diffs = await checkFixture(server!.adminAddress, wrong, checkOptions());
      const expectedDiffs = [
        /^client alpha \w+: ListClients labels .*zz-not-there/,
        /^client alpha \w+: ListClients blacklisted false, want true/,
        /^client alpha \w+: contact .* missing/,
        /^client alpha \w+: 1 of 1 resource-usage records missing/,
        new RegExp(`^message ${processed.messageId} .*: has a result`),
        new RegExp(`^GetPendingMessages: ${pending.messageId} .*F:WRONG`),
        new RegExp(`^broadcast ${active.broadcastId} .*client/other`),
        new RegExp(`^file ${file.service}/${file.name}: HTTP 200, ${file.data.length} bytes \\(different content\\)`),
      ];
      for (const re of expectedDiffs) assert.ok(diffs.some((d) => re.test(d)), `a difference matching ${re} in:\n${diffs.join("\n")}`);
      // …and nothing about what was not changed.
      const changed = [alpha.clientId, processed.messageId, pending.messageId, active.broadcastId, `${file.service}/${file.name}`, "GetPendingMessageCount"];
      assert.deepEqual(
        diffs.filter((d) => !changed.some((c) => d.includes(c))),
        [],
      );
    });

    it("has Fleetspeak retry the due server-bound message, and only that one, when the Processor answers", async () => {
      const serverBound = fixture.expected.messages.filter((m) => m.status.kind === "pending" && m.destination.clientId === "");
      const due = serverBound.filter((m) => m.status.kind === "pending" && m.status.due);
      assert.equal(due.length, 1);
      release();
      await pollUntil("the due Pong at the Processor", () => processor.processed.length >= 1, { watch: [server!.proc] });
      assert.deepEqual(
        processor.processed.map((m) => Buffer.from(m.messageId).toString("hex")),
        due.map((m) => m.messageId),
      );
      due[0]!.status = { kind: "processed" };
    });

    it(`delivers the pending messages and owed broadcasts to ${client === "go" ? "Fleetspeak's" : "our"} clients on the machines`, async () => {
      const { expected, received } = await deliverPending(fixture.expected, {
        adminAddress: server!.adminAddress,
        frontend: fixture.publicAddress,
        client,
        makeDue: fixtureMakeDue(fixture),
      }).catch((e: Error) => {
        const errors = server!.proc.output().split("\n").filter((l) => /^[EW]\d{4}|broadcast|Broadcast|FindMessagesForClient/.test(l));
        throw new Error(`${e.message}\nFleetspeak's errors and warnings:\n${errors.slice(-60).join("\n")}`);
      });
      assert.deepEqual(Object.keys(received).sort(), ["delta", "gamma"]);
      assert.deepEqual(await checkFixture(server!.adminAddress, expected, checkOptions()), []);
    });
  });
}
