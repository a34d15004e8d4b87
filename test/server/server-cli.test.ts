// fleetspeak-server's command line: --check reads both config files, prints what would run and
// exits 0; a bad file gives file:line:col and a non-zero exit. Run as a real process.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { testServerPki } from "../support/tls.js";

const ROOT = resolve(import.meta.dirname, "../..");
const dir = mkdtempSync(join(tmpdir(), "fs-cli-"));

function server(...args: string[]) {
  const r = spawnSync(process.execPath, [join(ROOT, "bin/fleetspeak-server.js"), ...args], { encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

const pem = (s: string) => JSON.stringify(s);

describe("fleetspeak-server --check", () => {
  const pki = testServerPki();
  const services = file("services.config", "");

  it("accepts the seed's frontend config, as written there with the blanks filled in (and its missing '>')", () => {
    // From the scaling guide: https_config kept, admin_config removed, notification addresses added.
    const comp = file(
      "frontend.config",
      `mysql_data_source_name: "fleetspeak:secret@tcp(127.0.0.1:3306)/fleetspeak"
https_config: <
  listen_address: "0.0.0.0:4443"
  certificates: ${pem(pki.certChainPem)}
  key: ${pem(pki.keyPem)}
>
notification_listen_address: "0.0.0.0:10000"
notification_public_address: "10.0.0.5:10000"
proxy_protocol: true
`,
    );
    const r = server("--components_config", comp, "--services_config", services, "--check");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^config OK: frontend on 0\.0\.0\.0:4443 \(mtls, PROXY protocol\)/);
    assert.match(r.out, /notification listener on 0\.0\.0\.0:10000 \(advertised as 10\.0\.0\.5:10000\)/);
    assert.match(r.out, /datastore MySQL 127\.0\.0\.1:3306\/fleetspeak/);
    assert.doesNotMatch(r.out, /admin server/);
  });

  it("accepts the seed's admin config with Go-style single-dash flags", () => {
    const comp = file(
      "admin.config",
      `mysql_data_source_name: "fleetspeak:secret@tcp(127.0.0.1:3306)/fleetspeak"
admin_config: <
  listen_address: "0.0.0.0:4444"
>
notification_use_http_notifier: true
`,
    );
    const r = server("-components_config", comp, "-services_config", services, "-check");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /admin server on 0\.0\.0\.0:4444; notifications to frontends over HTTP/);
    assert.doesNotMatch(r.out, /frontend on/);
  });

  it("accepts GRR's services config and summarises the services", () => {
    const svc = file(
      "grr.services",
      `services {
  name: "GRR"
  factory: "GRPC"
  config {
    [type.googleapis.com/fleetspeak.grpcservice.Config] {
      target: "localhost:11111"
      insecure: true
    }
  }
}
broadcast_poll_time { seconds: 1 }
`,
    );
    const comp = file("both.config", `admin_config { listen_address: "127.0.0.1:6061" }`);
    const r = server("--components_config", comp, "--services_config", svc, "--sqlite_path", join(dir, "x.sqlite"), "--check");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /services: GRR \(GRPC\)/);
    assert.match(r.out, /datastore SQLite .*x\.sqlite/);
  });

  it("reports a bad file with file:line:col and exits non-zero", () => {
    const comp = file("typo.config", `admin_config {\n  listen_adress: "x:1"\n}\n`);
    const r = server("--components_config", comp, "--services_config", services, "--check");
    assert.equal(r.code, 1);
    assert.match(r.err, /typo\.config:2:3: unknown field "listen_adress"/);
    assert.match(r.err, /did you mean "listen_address"/);
  });

  it("explains what is missing: no component, https without a key, a bad DSN, an unknown factory", () => {
    const cases: Array<[string, string, RegExp]> = [
      [`mysql_data_source_name: "x@tcp(h:1)/d"`, "", /neither https_config nor admin_config/],
      [`https_config { listen_address: ":4443" }`, "", /https_config requires listen_address, certificates and key/],
      [`admin_config { listen_address: ":1" } mysql_data_source_name: "u@tcp(h:99999)/d"`, "", /invalid port "99999"/],
      [`admin_config { listen_address: ":1" }`, `services { name: "X" factory: "CPS" }`, /unable to find factory \[CPS\]/],
      [`admin_config { listen_address: ":1" }`, `services { name: "system" factory: "NOOP" }`, /illegal service name \[system\]/],
    ];
    for (const [c, s, re] of cases) {
      const r = server("--components_config", file("c.config", c), "--services_config", file("s.config", s), "--sqlite_path", join(dir, "db.sqlite"), "--check");
      assert.notEqual(r.code, 0, c);
      assert.match(r.err, re);
    }
  });

  it("rejects unknown flags with the usage text", () => {
    const r = server("--no_such_flag");
    assert.equal(r.code, 2);
    assert.match(r.err, /Unknown option '--no_such_flag'/);
    assert.match(r.err, /usage: fleetspeak-server/);
  });
});
