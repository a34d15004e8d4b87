import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { ClientStateStore, StateError, serialKey } from "../../src/client/state.js";
import { clientIdOfKey, keyFromSec1Der } from "../../src/common/certs.js";
import { clientIdToHex } from "../../src/common/ids.js";
import { createLogger } from "../../src/common/log.js";
import { ClientStateSchema } from "../../src/gen/fleetspeak_client/client_pb.js";
import { tempDir } from "./support/client-env.js";

const log = createLogger("test");

describe("client state file", () => {
  it("creates a P-256 identity on first start and keeps it across restarts", () => {
    const stateFile = join(tempDir(), "fleetspeak-client.state");
    const first = new ClientStateStore({ stateFile, resetState: false, log });
    first.sequencingNonce = 1234n;
    first.addRevokedSerials([Buffer.from([0x01, 0x02])]);
    first.write();
    assert.equal((statSync(stateFile).mode & 0o777).toString(8), "600");
    assert.equal(existsSync(`${stateFile}.new`), false);

    const state = fromBinary(ClientStateSchema, readFileSync(stateFile));
    const key = keyFromSec1Der(state.clientKey);
    assert.equal(key.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.equal(clientIdToHex(clientIdOfKey(key)), first.clientIdHex);
    assert.equal(state.sequencingNonce, 1234n);

    const second = new ClientStateStore({ stateFile, resetState: false, log });
    assert.equal(second.clientIdHex, first.clientIdHex);
    assert.equal(second.sequencingNonce, 1234n);
    assert.ok(second.isRevoked("0102"));
    assert.ok(second.isRevoked("000102"), "serials compare as numbers");
  });

  it("refuses a corrupt state file instead of silently becoming a new client", () => {
    const stateFile = join(tempDir(), "fleetspeak-client.state");
    for (const garbage of [Buffer.from("not a protobuf \xff\xff\xff"), Buffer.alloc(0), Buffer.from([0x0a, 0x03, 1, 2, 3])]) {
      writeFileSync(stateFile, garbage);
      assert.throws(
        () => new ClientStateStore({ stateFile, resetState: false, log }),
        (e: Error) => e instanceof StateError && e.message.includes(stateFile) && e.message.includes("--reset_state"),
      );
    }
  });

  it("with --reset_state keeps the corrupt file aside and starts a new identity", () => {
    const dir = tempDir();
    const stateFile = join(dir, "fleetspeak-client.state");
    writeFileSync(stateFile, "garbage");
    const s = new ClientStateStore({ stateFile, resetState: true, log });
    s.write();
    assert.ok(readdirSync(dir).some((f) => f.startsWith("fleetspeak-client.state.corrupt-")));
    assert.equal(new ClientStateStore({ stateFile, resetState: false, log }).clientIdHex, s.clientIdHex);
  });

  it("rekey gives a new ClientID and tells listeners", () => {
    const s = new ClientStateStore({ stateFile: "", resetState: false, log });
    const before = s.clientIdHex;
    let told = 0;
    s.onRekey(() => told++);
    s.rekey();
    assert.notEqual(s.clientIdHex, before);
    assert.equal(told, 1);
  });

  it("normalises serials from bytes and from Node's hex text alike", () => {
    assert.equal(serialKey(Buffer.from([0, 0xab])), serialKey("AB"));
    assert.equal(serialKey(new Uint8Array(0)), "0");
  });

  it("writes serials back with the bytes they came with (leading zeros too), as Fleetspeak's client does, once per number", () => {
    const stateFile = join(tempDir(), "fleetspeak-client.state");
    const s = new ClientStateStore({ stateFile, resetState: false, log });
    s.addRevokedSerials([Buffer.from([0, 0, 0x7f]), new Uint8Array(0), Buffer.from([0x80, 0]), Buffer.from([0x7f])]);
    s.write();
    const written = fromBinary(ClientStateSchema, readFileSync(stateFile)).revokedCertSerials;
    assert.deepEqual(written.map((b) => Buffer.from(b).toString("hex")), ["00007f", "", "8000"]);
    // …and a file read and written again keeps them so.
    const again = new ClientStateStore({ stateFile, resetState: false, log });
    again.markDirty();
    again.write();
    assert.deepEqual(
      fromBinary(ClientStateSchema, readFileSync(stateFile)).revokedCertSerials.map((b) => Buffer.from(b).toString("hex")),
      ["00007f", "", "8000"],
    );
  });
});
