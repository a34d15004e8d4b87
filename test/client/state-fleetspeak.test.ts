// State files that Fleetspeak's Go client wrote, read by ours, and what happens when one is
// damaged. The fixture is made here by the real Go client (fleetspeak_config's Linux client config,
// no server reachable: it writes its state file on start), never by hand; the damaged variants are
// cut from it. Fleetspeak's own behaviour on the same damaged files is shown beside ours, since the
// docs claim ours is safer.
import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { before, describe, it } from "node:test";
import { ClientStateStore } from "../../src/client/state.js";
import { createLogger } from "../../src/common/log.js";
import { type GoDeployment, makeGoDeployment } from "../support/go-server.js";
import { tempDir, until } from "./support/client-env.js";
import {
  type ClientTree,
  decodeStateFile,
  installClientTree,
  printClientId,
  startGoClient,
  startOurClient,
} from "./support/fleetspeak-deployment.js";

const log = createLogger("test");

describe("state files written by Fleetspeak's Go client", { timeout: 120_000 }, () => {
  let deployment: GoDeployment;
  /** The Go client's state file and the ClientID it logged. */
  let goState: Buffer;
  let goId: string;

  before(async () => {
    // No server runs: the frontend port fleetspeak_config was given stays closed.
    deployment = await makeGoDeployment(`sqlite:${tempDir()}/unused.sqlite`, "state-fixture");
    const tree = installClientTree(deployment);
    const go = startGoClient("go-client-fixture", tree.configFile);
    const [, id] = await go.waitFor(/Using new client id: ([0-9a-f]{16})/);
    await until(() => existsSync(tree.stateFile), 20_000, "Fleetspeak's state file");
    await go.stop("SIGKILL");
    goId = id!;
    goState = readFileSync(tree.stateFile);
    assert.equal((statSync(tree.stateFile).mode & 0o777).toString(8), "600", "Fleetspeak writes it 0600");
    assert.deepEqual(decodeStateFile(tree.stateFile).fields, [1], "a first state file holds only the key");
  });

  /** A machine whose state file holds `bytes`. */
  function machineWithState(bytes: Buffer): ClientTree {
    const tree = installClientTree(deployment);
    writeFileSync(tree.stateFile, bytes, { mode: 0o600 });
    return tree;
  }

  it("gives our client the Go client's ClientID", () => {
    const tree = machineWithState(goState);
    assert.equal(new ClientStateStore({ stateFile: tree.stateFile, resetState: false, log }).clientIdHex, goId);
  });

  it("fleetspeak-client -print_client_id shows the Go client's ClientID and changes nothing", () => {
    const tree = machineWithState(goState);
    const r = printClientId(tree.configFile);
    assert.deepEqual(r, { status: 0, stdout: `${goId}\n`, stderr: "" });
    assert.deepEqual(readFileSync(tree.stateFile), goState);

    const fresh = installClientTree(deployment);
    const missing = printClientId(fresh.configFile);
    assert.equal(missing.status, 1);
    assert.equal(missing.stdout, "");
    assert.match(missing.stderr, /^fleetspeak-client: the client state file .* does not exist: no client has run with this config yet/);
    assert.equal(existsSync(fresh.stateFile), false);
  });

  it("keeps fields it does not know when our client writes the file back", () => {
    // Field 2 (bytes) and 15 (varint): what another Fleetspeak version might have stored.
    const tree = machineWithState(Buffer.concat([goState, Buffer.from([0x12, 0x02, 0x68, 0x69, 0x78, 0x2a])]));
    const state = new ClientStateStore({ stateFile: tree.stateFile, resetState: false, log });
    state.sequencingNonce = 99n;
    state.write();
    const written = decodeStateFile(tree.stateFile);
    assert.deepEqual(written.fields, [1, 2, 7, 15]);
    assert.equal(written.clientKey, decodeStateFile(machineWithState(goState).stateFile).clientKey);
  });

  it("reads the state file, not a <state>.new left by a write that crashed before its rename", () => {
    const tree = machineWithState(goState);
    const another = new ClientStateStore({ stateFile: `${tree.stateFile}.new`, resetState: false, log });
    another.write();
    const state = new ClientStateStore({ stateFile: tree.stateFile, resetState: false, log });
    assert.equal(state.clientIdHex, goId);
    state.write();
    assert.equal(existsSync(`${tree.stateFile}.new`), false);
  });

  const damaged: Array<[string, (b: Buffer) => Buffer]> = [
    ["cut short", (b) => b.subarray(0, Math.floor(b.length / 2))],
    ["empty", () => Buffer.alloc(0)],
    ["not a protobuf", () => Buffer.from("ssh-rsa AAAA... copied over the state file\n")],
    ["a client_key that is no EC key", () => Buffer.from([0x0a, 0x04, 0xde, 0xad, 0xbe, 0xef])],
  ];

  for (const [what, damage] of damaged) {
    it(`our client refuses a state file that is ${what}: one line naming the file and what to do, file untouched`, async () => {
      const bytes = damage(goState);
      const tree = machineWithState(bytes);
      const client = startOurClient(`our-client-${what}`, tree.configFile);
      assert.equal(await client.exited, 1);
      const lines = client.output().trimEnd().split("\n");
      assert.equal(lines.length, 1, client.output());
      assert.match(lines[0]!, /^fleetspeak-client: the client state file .* is corrupt \(/);
      assert.ok(lines[0]!.includes(tree.stateFile), lines[0]);
      assert.match(lines[0]!, /restore it from a backup, or start once with --reset_state/);
      assert.deepEqual(readFileSync(tree.stateFile), bytes, "the file is left as it was");
      const printed = printClientId(tree.configFile);
      assert.equal(printed.status, 1);
      assert.equal(printed.stderr, `${lines[0]}\n`);
    });
  }

  it("for comparison: Fleetspeak's Go client, on a cut-short or empty file, silently takes a new ClientID over it", async () => {
    for (const [, damage] of damaged.slice(0, 2)) {
      const tree = machineWithState(damage(goState));
      const go = startGoClient("go-client-damaged", tree.configFile);
      const [, id] = await go.waitFor(/Using new client id: ([0-9a-f]{16})/);
      await until(() => decodeStateFile(tree.stateFile).clientKey !== "", 20_000, "Fleetspeak's rewrite");
      await go.stop("SIGKILL");
      assert.notEqual(id, goId);
      assert.notDeepEqual(readFileSync(tree.stateFile), goState);
    }
  });

  it("for comparison: Fleetspeak's Go client stops on a client_key that is no EC key", async () => {
    const tree = machineWithState(damaged[3]![1](goState));
    const go = startGoClient("go-client-bad-key", tree.configFile);
    assert.notEqual(await go.exited, 0);
    assert.match(go.output(), /unable to parse client key/);
  });

  it("a missing state file is a new machine, as for Fleetspeak's client above: a new ClientID, written 0600", async () => {
    const tree = installClientTree(deployment);
    const client = startOurClient("our-client-no-state", tree.configFile);
    const [, id] = await client.waitFor(/"clientId":"([0-9a-f]{16})"[^\n]*created a new client identity/);
    await client.waitFor(/client started/);
    assert.equal(await client.stop(), 0);
    assert.notEqual(id, goId);
    assert.equal((statSync(tree.stateFile).mode & 0o777).toString(8), "600");
    assert.equal(new ClientStateStore({ stateFile: tree.stateFile, resetState: false, log }).clientIdHex, id);
  });
});
