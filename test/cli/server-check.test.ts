// `fleetspeak-server --check` means "will start": each input below makes the real start (or the
// first client) fail, and --check says so in one line naming file:line:column and field, before
// anything runs. Warnings (a certificate expiring within 30 days, or not naming the address the
// frontend listens on) leave the exit status 0. --connect asks the database too.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildCertificate, createServerCertificate, derToPem, generateP256Key, keyToPem } from "../../src/common/certs.js";
import { createTestDatabase, type TestDatabase } from "../support/mariadb.js";
import { testServerPki } from "../support/tls.js";

const ROOT = resolve(import.meta.dirname, "../..");
const DAY = 24 * 3600 * 1000;

describe("fleetspeak-server --check: will it start?", () => {
  const pki = testServerPki();
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "fs-server-check-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function file(name: string, text: string): string {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  }
  function check(components: string, services = "", ...flags: string[]) {
    const r = spawnSync(
      process.execPath,
      [
        join(ROOT, "bin/fleetspeak-server.js"),
        "--components_config",
        file("c.config", components),
        "--services_config",
        file("s.config", services),
        "--sqlite_path",
        join(dir, "fleetspeak.sqlite"),
        "--check",
        ...flags,
      ],
      { encoding: "utf8" },
    );
    return { code: r.status, out: r.stdout, err: r.stderr };
  }
  /** A frontend config; line 3 is certificates, line 4 is key. */
  const frontend = (certificates: string, key: string, listen = "127.0.0.1:4443") =>
    `https_config {\n  listen_address: "${listen}"\n  certificates: ${JSON.stringify(certificates)}\n  key: ${JSON.stringify(key)}\n}\n`;
  /** One line on stderr, the exit status 1. */
  function refused(r: { code: number | null; err: string }, re: RegExp): void {
    assert.equal(r.code, 1, r.err);
    assert.equal(r.err.trimEnd().split("\n").length, 1, r.err);
    assert.match(r.err, re);
  }
  /** A server certificate from the test CA valid from..to (ms since epoch). */
  function certificate(from: number, to: number, hosts = ["localhost", "127.0.0.1"]) {
    const key = generateP256Key();
    const der = buildCertificate({
      subject: [["2.5.4.3", "dated"]],
      issuer: [["2.5.4.3", "test Fleetspeak CA"]],
      publicKey: key,
      signingKey: pki.ca.key,
      notBefore: new Date(from),
      notAfter: new Date(to),
      isCa: false,
      dnsNames: hosts.filter((h) => !/^\d/.test(h)),
      ipAddresses: hosts.filter((h) => /^\d/.test(h)),
    });
    return { certPem: derToPem(der) + pki.ca.certPem, keyPem: keyToPem(key) };
  }

  it("passes a good frontend and describes its certificate", () => {
    const r = check(frontend(pki.certChainPem, pki.keyPem));
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, "");
    assert.match(r.out, /frontend certificate CN=test Fleetspeak Server, names localhost, 127\.0\.0\.1, [0:]+1, valid until \d{4}-\d\d-\d\d/);
  });

  it("says how many worker processes would run: one per CPU by default, worker_processes, or --workers", () => {
    const cpus = availableParallelism();
    const byDefault = check(frontend(pki.certChainPem, pki.keyPem));
    assert.match(byDefault.out, cpus === 1 ? /; one process \(one per CPU;/ : new RegExp(`; ${cpus} worker processes \\(one per CPU;`));
    const configured = check(`${frontend(pki.certChainPem, pki.keyPem)}worker_processes: 6\n`);
    assert.equal(configured.code, 0, configured.err);
    assert.match(configured.out, /; 6 worker processes;/);
    assert.match(check(frontend(pki.certChainPem, pki.keyPem), "", "--workers", "1").out, /; one process \(--workers\);/);
    refused(check(`${frontend(pki.certChainPem, pki.keyPem)}worker_processes: 1000\n`), /c\.config:6:1: worker_processes: 1000 is more than 256/);
    const zero = check(frontend(pki.certChainPem, pki.keyPem), "", "--workers", "0");
    assert.equal(zero.code, 2);
    assert.match(zero.err, /--workers 0: give a whole number from 1 to 256/);
  });

  it("checks worker_notification_port: a range of free ports, one per worker, next to a notification listener", () => {
    const base = `${frontend(pki.certChainPem, pki.keyPem)}notification_listen_address: "0.0.0.0:7000"\nnotification_public_address: "fe1.example:7000"\n`;
    const ok = check(`${base}worker_notification_port: 7010\n`, "", "--workers", "4");
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /; each worker notified at its own port, 7010-7013/);
    assert.match(check(`${base}worker_notification_port: 7010\n`, "", "--workers", "1").out, /worker_notification_port unused \(one process/);
    refused(
      check(`${base}worker_notification_port: 4440\n`, "", "--workers", "4"),
      /c\.config:8:1: worker_notification_port: the workers' ports 4440-4443 include https_config\.listen_address's port 4443; choose 4 ports no other listener uses/,
    );
    refused(
      check(`${base}worker_notification_port: 65534\n`, "", "--workers", "4"),
      /worker_notification_port: 4 workers from port 65534 go past 65535; choose a lower port/,
    );
    refused(
      check(`${frontend(pki.certChainPem, pki.keyPem)}worker_notification_port: 7010\n`, "", "--workers", "2"),
      /c\.config:6:1: worker_notification_port: needs notification_listen_address/,
    );
  });

  it("refuses a certificate that does not parse", () => {
    const broken = pki.certChainPem.replace(/^(-----BEGIN CERTIFICATE-----\n)(.)/, "$1!");
    refused(check(frontend(broken, pki.keyPem)), /c\.config:3:3: https_config\.certificates: certificate #1 cannot be parsed/);
  });

  it("refuses a key that does not belong to the certificate (the start would fail with 'key values mismatch')", () => {
    const other = createServerCertificate("other", pki.ca, ["localhost"]).keyPem;
    refused(
      check(frontend(pki.certChainPem, other)),
      /c\.config:4:3: https_config\.key: the key does not belong to the first certificate of https_config\.certificates \(CN=test Fleetspeak Server\)/,
    );
    refused(check(frontend(pki.certChainPem, "not a key")), /c\.config:4:3: https_config\.key: not a PEM private key/);
  });

  it("refuses an expired certificate and one not valid yet", () => {
    const expired = certificate(Date.now() - 400 * DAY, Date.now() - DAY);
    refused(check(frontend(expired.certPem, expired.keyPem)), /c\.config:3:3: https_config\.certificates: certificate #1 \(CN=dated\) expired on /);
    const future = certificate(Date.now() + DAY, Date.now() + 400 * DAY);
    refused(check(frontend(future.certPem, future.keyPem)), /c\.config:3:3: https_config\.certificates: certificate #1 \(CN=dated\) is not valid before /);
  });

  it("warns about a certificate expiring within 30 days, and one that does not name the address listened on", () => {
    const soon = certificate(Date.now() - DAY, Date.now() + 10 * DAY);
    const r = check(frontend(soon.certPem, soon.keyPem));
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /^fleetspeak-server: warning: .*c\.config:3:3: https_config\.certificates: certificate #1 \(CN=dated\) expires on \d{4}-\d\d-\d\d, in (9|10) days; renew it/);
    const elsewhere = check(frontend(pki.certChainPem, pki.keyPem, "10.11.12.13:4443"));
    assert.equal(elsewhere.code, 0, elsewhere.err);
    assert.match(elsewhere.err, /https_config\.certificates: the certificate names localhost, 127\.0\.0\.1, [0:]+1, not 10\.11\.12\.13; clients dialing 10\.11\.12\.13 will refuse the server/);
  });

  it("refuses a listen address that does not parse, at its line", () => {
    refused(
      check(`admin_config {\n  listen_address: "localhost:http"\n}\n`),
      /c\.config:2:3: admin_config\.listen_address: invalid port "http"/,
    );
  });

  it("refuses a services config whose files cannot be read, at the service", () => {
    const services = `services {\n  name: "GRR"\n  factory: "GRPC"\n  config {\n    [type.googleapis.com/fleetspeak.grpcservice.Config] {\n      target: "localhost:11111"\n      cert_file: "${join(dir, "missing-ca.pem")}"\n    }\n  }\n}\n`;
    refused(
      check(`admin_config { listen_address: "127.0.0.1:0" }`, services),
      /s\.config:4:3: service "GRR" \(factory GRPC\): cannot read cert_file .*missing-ca\.pem: ENOENT/,
    );
  });

  it("refuses a SQLite file whose folder does not exist", () => {
    const r = spawnSync(
      process.execPath,
      [
        join(ROOT, "bin/fleetspeak-server.js"),
        "--components_config",
        file("c2.config", `admin_config { listen_address: "127.0.0.1:0" }`),
        "--services_config",
        file("s2.config", ""),
        "--sqlite_path",
        join(dir, "no-such-folder", "fleetspeak.sqlite"),
        "--check",
      ],
      { encoding: "utf8" },
    );
    refused({ code: r.status, err: r.stderr }, /--sqlite_path .*no-such-folder\/fleetspeak\.sqlite: its folder .*no-such-folder does not exist/);
  });

  it("refuses a DSN that does not parse, at its line", () => {
    refused(
      check(`admin_config { listen_address: "127.0.0.1:0" }\nmysql_data_source_name: "fleetspeak@tcp(db:3306"\n`),
      /c\.config:2:1: mysql_data_source_name: /,
    );
  });

  describe("--connect", () => {
    let db: TestDatabase;
    before(async () => {
      db = await createTestDatabase();
    });
    after(async () => {
      await db?.drop();
    });
    const admin = (dsn: string) => `admin_config { listen_address: "127.0.0.1:0" }\nmysql_data_source_name: "${dsn}"\n`;

    it("asks the database, which answers", () => {
      const r = check(admin(db.dsn), "", "--connect");
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`database ${db.name} at 127\\.0\\.0\\.1:3306 answers \\(.*MariaDB.*; empty, schema version \\d+ created at start\\)`));
    });

    it("says what to do when the database does not exist or nothing listens", () => {
      refused(
        check(admin(db.dsn.replace(db.name, `${db.name}_missing`)), "", "--connect"),
        /mysql_data_source_name: database .*_missing at 127\.0\.0\.1:3306 .*ER_BAD_DB_ERROR.*; create it \(CREATE DATABASE/,
      );
      refused(check(admin("root@tcp(127.0.0.1:1)/x"), "", "--connect"), /mysql_data_source_name: database x at 127\.0\.0\.1:1 .*ECONNREFUSED.*check that the database server runs/);
    });

    it("goes with --check only", () => {
      const r = spawnSync(process.execPath, [join(ROOT, "bin/fleetspeak-server.js"), "--connect"], { encoding: "utf8" });
      assert.equal(r.status, 2);
      assert.match(r.stderr, /^fleetspeak-server: --connect goes with --check/);
    });
  });
});
