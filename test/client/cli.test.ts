// bin/fleetspeak-client.js as a real process: Go-style flags, identity across restarts, a corrupt
// state file, SIGTERM, SIGHUP, Die.
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { createCa } from "../../src/common/certs.js";
import { ClientInfoDataSchema, DieRequestSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { ClientProcess, daemonServiceText, testDaemonArgv, until, writeClientConfig } from "./support/client-env.js";
import { FakeFrontend } from "./support/fake-frontend.js";

const ca = createCa("test");
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function frontend(): Promise<FakeFrontend> {
  const ff = await FakeFrontend.start({ ca });
  cleanups.push(() => ff.stop());
  return ff;
}

function spawnClient(args: string[]): ClientProcess {
  const p = new ClientProcess(args);
  cleanups.push(() => p.close());
  return p;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("fleetspeak-client binary", () => {
  it("takes -config FILE, keeps its ClientID across restarts, and stops its daemon on SIGTERM", async () => {
    const ff = await frontend();
    const files = writeClientConfig({
      ca,
      servers: [ff.address],
      textServices: { "echo.service": daemonServiceText("TestService", testDaemonArgv("echo")) },
    });
    const first = spawnClient(["-config", files.configFile]);
    const hello = await ff.waitFor((r) => r.message.messageType === "Hello");
    const daemonPid = Number(Buffer.from(anyUnpack(hello.message.data!, BytesValueSchema)!.value).toString().split(" ")[1]);
    assert.ok(pidAlive(daemonPid));
    first.kill("SIGTERM");
    const exit = await first.exited;
    assert.equal(exit.code, 0);
    await until(() => !pidAlive(daemonPid), 5000, "daemon gone");

    const second = spawnClient([`-config=${files.configFile}`]);
    await ff.until(() => ff.received.filter((r) => r.message.messageType === "ClientInfo").length === 2, 20_000, "second start");
    const ids = new Set(ff.received.filter((r) => r.message.messageType === "ClientInfo").map((r) => r.clientId));
    assert.equal(ids.size, 1, "same ClientID after a restart");
    second.kill("SIGINT");
    assert.equal((await second.exited).code, 0);
  });

  it("refuses a corrupt state file with a clear message unless --reset_state is given", async () => {
    const ff = await frontend();
    const files = writeClientConfig({ ca, servers: [ff.address] });
    writeFileSync(files.stateFile, "definitely not a ClientState");
    const refused = spawnClient(["--config", files.configFile]);
    assert.equal((await refused.exited).code, 1);
    const line = await refused.waitForLine("is corrupt");
    assert.ok(line.includes(files.stateFile) && line.includes("--reset_state"), line);
    assert.equal(ff.contacts.length, 0);

    const reset = spawnClient(["--config", files.configFile, "--reset_state"]);
    await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    reset.kill();
    await reset.exited;
  });

  it("reports a config error with file, line and column, and exits 1", async () => {
    const dir = writeClientConfig({ ca, servers: ["127.0.0.1:1"] });
    const bad = join(dir.dir, "bad.config");
    writeFileSync(bad, 'server: "a:1"\nserver_nme: "x"\n');
    const p = spawnClient(["-config", bad]);
    assert.equal((await p.exited).code, 1);
    await p.waitForLine(`${bad}:2:1`);
  });

  it("exits with 7 when the server sends Die", async () => {
    const ff = await frontend();
    const files = writeClientConfig({ ca, servers: [ff.address] });
    const p = spawnClient(["-config", files.configFile]);
    const info = await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    ff.send(info.clientId, "system", "Die", anyPack(DieRequestSchema, create(DieRequestSchema, { force: true })));
    assert.equal((await p.exited).code, 7);
  });

  it("reloads on SIGHUP: re-reads the service configs, same identity", async () => {
    const ff = await frontend();
    const files = writeClientConfig({ ca, servers: [ff.address] });
    const p = spawnClient(["-config", files.configFile]);
    const info = await ff.waitFor((r) => r.message.messageType === "ClientInfo");
    writeFileSync(join(files.configDir, "textservices", "sink.service"), 'name: "Sink" factory: "NOOP"\n');
    p.kill("SIGHUP");
    const after = await ff.waitFor(
      (r) =>
        r.message.messageType === "ClientInfo" &&
        anyUnpack(r.message.data!, ClientInfoDataSchema)!.services.some((s) => s.name === "Sink"),
    );
    assert.equal(after.clientId, info.clientId);
    p.kill("SIGTERM");
    assert.equal((await p.exited).code, 0);
  });
});
