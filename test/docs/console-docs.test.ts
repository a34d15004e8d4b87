// docs/console.md, followed: the server starts from its config block (local addresses and SQLite
// instead of the example's hosts), the page's fleetspeak-admin command prints a token, and that
// token signs in where the command says.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { parseText, printText } from "../../src/common/textproto/index.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { freePort } from "../support/haproxy.js";
import { type ManagedProcess, startServerProcess } from "../support/processes.js";

const ROOT = resolve(import.meta.dirname, "../..");
const DOC = readFileSync(join(ROOT, "docs/console.md"), "utf8");

function fenced(startsWith: string): string {
  const m = new RegExp("```[a-z]*\\n(" + startsWith.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "[\\s\\S]*?)```").exec(DOC);
  assert.ok(m, `docs/console.md has no block starting ${JSON.stringify(startsWith)}`);
  return m[1]!;
}

describe("docs/console.md, followed", { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), "fs-console-doc-"));
  const configPath = join(dir, "server.components.config");
  let server: ManagedProcess;
  let consoleAddress: string;

  before(async () => {
    const cfg = parseText(ComponentsConfigSchema, fenced("# fleetspeak.components.Config: an admin server"), {
      fileName: "docs/console.md",
    });
    cfg.mysqlDataSourceName = "";
    cfg.adminConfig!.listenAddress = `127.0.0.1:${await freePort()}`;
    consoleAddress = `127.0.0.1:${await freePort()}`;
    cfg.adminConfig!.console!.listenAddress = consoleAddress;
    writeFileSync(configPath, printText(ComponentsConfigSchema, cfg));
    server = await startServerProcess({
      name: "console-doc",
      components: readFileSync(configPath, "utf8"),
      services: "",
      sqlitePath: join(dir, "fleetspeak.sqlite"),
    });
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("prints a token with the page's command, and the token signs in at the address it names", async () => {
    const command = fenced("fleetspeak-admin console-token").trim().split(/\s+/);
    assert.equal(command[0], "fleetspeak-admin");
    const args = command.slice(1).map((a) => (a === "/etc/fleetspeak-server/server.components.config" ? configPath : a));
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(ROOT, "bin/fleetspeak-admin.js"), ...args]);
    assert.match(stderr, new RegExp(`sign in at http://${consoleAddress}/login with this token \\(user alice, valid until `));
    const before = await fetch(`http://${consoleAddress}/`);
    assert.equal(before.status, 401);
    const login = await fetch(`http://${consoleAddress}/login`, {
      method: "POST",
      body: new URLSearchParams({ token: stdout.trim() }),
      redirect: "manual",
    });
    assert.equal(login.status, 303);
    const cookie = login.headers.get("set-cookie")!.split(";")[0]!;
    const fleet = await fetch(`http://${consoleAddress}/`, { headers: { cookie } });
    assert.equal(fleet.status, 200);
    assert.match(await fleet.text(), /<h1>Fleet<\/h1>/);
  });
});
