// fleetspeak-server's start-up failures read like a tool's: one line on stderr naming the config
// field and its value, why, and what to do; no JSON log line with a stack trace. Each listener's
// address is taken by another socket (or is not this machine's) in turn.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { testServerPki } from "../support/tls.js";

const ROOT = resolve(import.meta.dirname, "../..");

describe("fleetspeak-server start-up errors", () => {
  const pki = testServerPki();
  let dir: string;
  let taken: Server;
  let busy: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "fs-start-errors-"));
    taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    busy = `127.0.0.1:${(taken.address() as { port: number }).port}`;
  });
  after(async () => {
    await new Promise((r) => taken.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  function start(components: string) {
    const c = join(dir, "c.config");
    const s = join(dir, "s.config");
    writeFileSync(c, components);
    writeFileSync(s, "");
    const r = spawnSync(
      process.execPath,
      [join(ROOT, "bin/fleetspeak-server.js"), "--components_config", c, "--services_config", s, "--sqlite_path", join(dir, "db.sqlite")],
      { encoding: "utf8", env: { ...process.env, FLEETSPEAK_LOG_LEVEL: "warn" }, timeout: 60_000 },
    );
    assert.equal(r.status, 1, r.stderr);
    // Warnings about the config may come first; the failure is one line.
    const lines = r.stderr.trimEnd().split("\n").filter((l) => !l.startsWith("fleetspeak-server: warning: "));
    assert.equal(lines.length, 1, r.stderr);
    return lines[0]!;
  }
  const admin = 'admin_config { listen_address: "127.0.0.1:0" }\n';
  const inUse = (field: string, address: string) =>
    new RegExp(
      `^fleetspeak-server: cannot start: ${field.replaceAll(".", "\\.")} "${address}": cannot listen: the address is in use by another process \\(a server already running\\?\\); stop it, or listen elsewhere \\(EADDRINUSE\\)$`,
    );

  it("names https_config.listen_address when the frontend's port is taken", () => {
    const frontend = `https_config {\n  listen_address: "${busy}"\n  certificates: ${JSON.stringify(pki.certChainPem)}\n  key: ${JSON.stringify(pki.keyPem)}\n}\n`;
    assert.match(start(frontend), inUse("https_config.listen_address", busy));
  });

  it("names admin_config.listen_address, notification_listen_address, health_check_config and stats_config", () => {
    assert.match(start(`admin_config { listen_address: "${busy}" }\n`), inUse("admin_config.listen_address", busy));
    assert.match(
      start(`${admin}notification_listen_address: "${busy}"\nnotification_public_address: "${busy}"\n`),
      inUse("notification_listen_address", busy),
    );
    assert.match(start(`${admin}health_check_config { listen_address: "${busy}" }\n`), inUse("health_check_config.listen_address", busy));
    assert.match(start(`${admin}stats_config { address: "${busy}" }\n`), inUse("stats_config.address", busy));
  });

  it("says when the address is not this machine's", () => {
    // 192.0.2.0/24 is reserved for documentation: no machine has it.
    assert.match(
      start('admin_config { listen_address: "192.0.2.1:4444" }\n'),
      /^fleetspeak-server: cannot start: admin_config\.listen_address "192\.0\.2\.1:4444": cannot listen: this machine has no such address; use one of its own, or 0\.0\.0\.0 for all of them \(EADDRNOTAVAIL\)$/,
    );
  });
});
