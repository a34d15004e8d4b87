// fleetspeak-admin, run as a process against a whole server in this process.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { StringValueSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createCa, createServerCertificate } from "../../src/common/certs.js";
import { createLogger } from "../../src/common/log.js";
import { ResourceUsageDataSchema } from "../../src/gen/fleetspeak_monitoring/resource_pb.js";
import { startAdminServer } from "../../src/server/admin/admin-server.js";
import { RawClient } from "../support/raw-client.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { testServerPki } from "../support/tls.js";

const ROOT = resolve(import.meta.dirname, "../..");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runAdmin(args: string[]): Promise<Run> {
  return new Promise((resolveRun, reject) => {
    const p = spawn(process.execPath, [join(ROOT, "bin/fleetspeak-admin.js"), ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    p.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr });
    });
  });
}

function assertOneLineError(r: Run, code: number, re: RegExp): void {
  assert.equal(r.code, code, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, "");
  assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, re);
}

describe("fleetspeak-admin", () => {
  let ts: TestServer;
  let dir: string;
  let client: RawClient;
  let id: string;
  const admin = async (...args: string[]): Promise<string> => {
    const r = await runAdmin(["--admin_addr", ts.server.adminAddress!, ...args]);
    assert.equal(r.code, 0, `fleetspeak-admin ${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stderr, "");
    return r.stdout;
  };
  const adminJson = async (...args: string[]) => JSON.parse(await admin("--json", ...args));

  before(async () => {
    ts = await startTestServer();
    dir = mkdtempSync(join(tmpdir(), "fs-admin-cli-"));
    client = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, labels: ["alpha"] });
    const r = await client.poll({});
    assert.equal(r.status, 200, r.text);
    id = client.clientIdHex;
  });
  after(async () => {
    await ts.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("lists clients with labels, last contact time and address", async () => {
    const text = await admin("listclients");
    const [header, row, ...rest] = text.trimEnd().split("\n");
    assert.match(header!, /^CLIENT_ID\s+LAST_CONTACT\s+ADDRESS\s+STREAMING_TO\s+LABELS$/);
    assert.equal(rest.length, 0);
    assert.match(row!, new RegExp(`^${id}\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:]+Z \\(\\d+s ago\\)\\s+127\\.0\\.0\\.1:\\d+\\s+-\\s+.*client:alpha`));

    const [c] = await adminJson("listclients", id);
    assert.equal(c.client_id, id);
    assert.ok(c.labels.includes("client:alpha"));
    assert.match(c.last_contact_address, /^127\.0\.0\.1:\d+$/);
    assert.ok(Math.abs(Date.parse(c.last_contact_time) - Date.now()) < 60_000);
    assert.equal(c.blacklisted, false);
  });

  it("lists contacts", async () => {
    const contacts = await adminJson("listcontacts", id);
    assert.equal(contacts.length, 1);
    assert.match(contacts[0].observed_address, /^127\.0\.0\.1:/);
    assert.match(await admin("listcontacts", id), /^TIME\s+ADDRESS\s+SENT_NONCE\s+RECEIVED_NONCE\n/);
  });

  it("sends a message, shows it pending and its status, and deletes it", async () => {
    const sent = await adminJson("send", id, "TestService", "Greeting", "--data_text", "hello");
    assert.match(sent.message_id, /^[0-9a-f]{64}$/);
    assert.equal((await admin("pendingcount", id)).trim(), "1");

    const table = await admin("pending", id);
    assert.match(table, new RegExp(`${sent.message_id}\\s+${id}\\s+TestService\\s+Greeting`));
    const [m] = await adminJson("pending", id, "--data");
    assert.equal(m.message_id, sent.message_id);
    assert.equal(m.destination.service_name, "TestService");
    assert.equal(m.source.service_name, "TestService");
    assert.equal(m.data.type_url, "type.googleapis.com/google.protobuf.StringValue");
    assert.equal(
      m.data.value_hex,
      Buffer.from(toBinary(StringValueSchema, create(StringValueSchema, { value: "hello" }))).toString("hex"),
    );

    assert.match(await admin("status", sent.message_id), /: pending\ncreated /);
    await admin("deletepending", id);
    assert.equal((await admin("pendingcount", id)).trim(), "0");
    const status = await adminJson("status", sent.message_id);
    assert.equal(status.state, "failed");
    assert.equal(status.failed_reason, "Removed by admin action.");
  });

  it("sends raw bytes with a type URL and pages pending messages", async () => {
    await admin("send", id, "TestService", "Raw", "--data_hex", "00ff", "--type_url", "type.example.com/x");
    await admin("send", id, "TestService", "Raw", "--source", "Other");
    const page = await adminJson("pending", id, "--limit", "1", "--offset", "1", "--data");
    assert.equal(page.length, 1);
    const all = await adminJson("pending", id, "--data");
    assert.equal(all.length, 2);
    const raw = all.find((m: { data?: unknown }) => m.data);
    assert.deepEqual(raw.data, { type_url: "type.example.com/x", value_hex: "00ff" });
    assert.ok(all.some((m: { source: { service_name: string } }) => m.source.service_name === "Other"));
    await admin("deletepending", id);
  });

  it("creates, lists and disables broadcasts", async () => {
    const { broadcast_id: bid } = await adminJson(
      "createbroadcast", "TestService", "Hello", "--labels", "alpha,GRR:beta", "--expires", "1h", "--data_text", "hi",
    );
    assert.match(bid, /^[0-9a-f]{16}$/);
    const list = await adminJson("listbroadcasts");
    const b = list.find((x: { broadcast_id: string }) => x.broadcast_id === bid);
    assert.ok(b, JSON.stringify(list));
    assert.deepEqual([...b.required_labels].sort(), ["GRR:beta", "client:alpha"]);
    assert.ok(Date.parse(b.expiration_time) > Date.now() + 50 * 60_000);
    assert.match(await admin("listactivebroadcasts", "TestService"), new RegExp(`${bid}\\s+TestService\\s+Hello\\s+\\S*client:alpha`));
    await admin("disablebroadcasts", bid);
    assert.equal(await admin("listbroadcasts"), "(none)\n");
  });

  it("stores and deletes files", async () => {
    const file = join(dir, "payload.bin");
    writeFileSync(file, Buffer.from("file contents"));
    assert.match(await admin("storefile", "TestService", "f.bin", file), /stored .* \(13 bytes\) as TestService\/f\.bin/);
    const stored = await ts.server.store.readFile("TestService", "f.bin");
    assert.equal(Buffer.from(stored!.data).toString(), "file contents");
    await admin("deletefile", "TestService", "f.bin");
    assert.equal(await ts.server.store.readFile("TestService", "f.bin"), undefined);
  });

  it("shows resource usage records", async () => {
    assert.equal(await admin("resourceusage", id), "(none)\n");
    await ts.server.store.recordResourceUsageData(
      client.clientId,
      create(ResourceUsageDataSchema, {
        scope: "TestService",
        pid: 4242n,
        processStartTime: timestampFromMs(Date.now() - 60_000),
        dataTimestamp: timestampFromMs(Date.now()),
        resourceUsage: { meanUserCpuRate: 1.5, maxUserCpuRate: 3 },
      }),
    );
    assert.match(await admin("resourceusage", id, "--since", "1h"), /TestService\s+4242\s+1\.5\/3\.0/);
    const [r] = await adminJson("resourceusage", id);
    assert.equal(r.pid, 4242);
  });

  it("blacklists a client (Go-style flags work too)", async () => {
    const r = await runAdmin(["-admin_addr", ts.server.adminAddress!, "blacklistclients", id]);
    assert.equal(r.code, 0, r.stderr);
    const [c] = await adminJson("listclients", id);
    assert.equal(c.blacklisted, true);
  });

  it("answers bad input with one line and a non-zero exit", async () => {
    const addr = ["--admin_addr", ts.server.adminAddress!];
    assertOneLineError(await runAdmin([...addr, "listclients", "xyz"]), 2, /bad client id "xyz": .*16 hex digits/);
    assertOneLineError(await runAdmin([...addr, "frobnicate"]), 2, /unknown command "frobnicate"; commands: listclients, /);
    assertOneLineError(await runAdmin([...addr, "--frob", "listclients"]), 2, /Unknown option '--frob'; see fleetspeak-admin --help/);
    assertOneLineError(await runAdmin([...addr, "send", id, "TestService"]), 2, /wrong number of arguments; usage: fleetspeak-admin send CLIENT_ID/);
    assertOneLineError(await runAdmin([...addr, "pendingcount", id, "--data_text", "x"]), 2, /pendingcount does not take --data_text/);
    assertOneLineError(await runAdmin([...addr, "status", "00"]), 2, /bad message id "00": it must be 64 hex digits/);
    assertOneLineError(await runAdmin([...addr, "status", "ab".repeat(32)]), 1, /message (ab)+ is not known to the server/);
    assertOneLineError(await runAdmin([]), 2, /no command given/);
    assertOneLineError(await runAdmin(["--admin_addr", "nowhere", "listclients"]), 2, /--admin_addr: .*needs a port/);
  });

  it("says which address it could not reach", async () => {
    const r = await runAdmin(["--admin_addr", "127.0.0.1:1", "listclients"]);
    assertOneLineError(
      r,
      1,
      /cannot reach the admin server at 127\.0\.0\.1:1 \(.*ECONNREFUSED.*\); the admin server may not be running, or the address is wrong/,
    );
  });

  it("prints help", async () => {
    const r = await runAdmin(["--help"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^usage: fleetspeak-admin /);
    for (const c of ["listclients", "send", "createbroadcast", "storefile", "resourceusage"]) {
      assert.match(r.stdout, new RegExp(`\\n  ${c} `));
    }
  });

  it("prints one command's usage and flags for COMMAND --help, -h and help COMMAND", async () => {
    for (const args of [["send", "--help"], ["send", "-h"], ["help", "send"]]) {
      const r = await runAdmin(args);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^usage: fleetspeak-admin \[global flags\] send CLIENT_ID SERVICE TYPE /);
      assert.match(r.stdout, /\n {2}--data_text TEXT +the payload, as text/);
      assert.match(r.stdout, /\n {2}--source SERVICE +the sending service/);
      assert.doesNotMatch(r.stdout, /createbroadcast|--labels/, "only send's usage");
    }
    const broadcast = await runAdmin(["createbroadcast", "--help"]);
    assert.match(broadcast.stdout, /\n {2}--limit N +reach at most N clients/);
    const unknown = await runAdmin(["nosuch", "--help"]);
    assertOneLineError(unknown, 2, /unknown command "nosuch"; commands: listclients, /);
  });
});

describe("fleetspeak-admin over TLS", () => {
  let dir: string;
  let tlsAdmin: Awaited<ReturnType<typeof startAdminServer>>;
  let plainAdmin: Awaited<ReturnType<typeof startAdminServer>>;
  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  let ca: string;
  let operatorCert: string;
  let operatorKey: string;
  let strangerCert: string;
  let strangerKey: string;
  let otherCa: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "fs-admin-tls-"));
    const pki = testServerPki();
    const operator = createServerCertificate("operator", pki.ca, ["operator"]);
    const other = createCa("other");
    const stranger = createServerCertificate("stranger", other, ["stranger"]);
    ca = file("ca.pem", pki.ca.certPem);
    operatorCert = file("operator.pem", operator.certPem);
    operatorKey = file("operator-key.pem", operator.keyPem);
    strangerCert = file("stranger.pem", stranger.certPem);
    strangerKey = file("stranger-key.pem", stranger.keyPem);
    otherCa = file("other-ca.pem", other.certPem);
    const service = { listClients: async () => ({ clients: [] }) };
    const logger = createLogger("test");
    tlsAdmin = await startAdminServer({
      listenAddress: "127.0.0.1:0",
      service,
      logger,
      tls: { cert: pki.certChainPem, key: pki.keyPem, ca: pki.ca.certPem, requireClientCert: true },
    });
    plainAdmin = await startAdminServer({ listenAddress: "127.0.0.1:0", service, logger });
  });
  after(async () => {
    await tlsAdmin.close();
    await plainAdmin.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const at = (server: { address: string }, ...args: string[]) =>
    runAdmin(["--admin_addr", server.address, "--timeout", "10s", ...args]);

  it("presents a client certificate to an admin server with mutual TLS", async () => {
    const r = await at(tlsAdmin, "--ca_cert", ca, "--client_cert", operatorCert, "--client_key", operatorKey, "listclients");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "(none)\n");
  });

  it("explains each way a TLS call goes wrong in one line", async () => {
    assertOneLineError(await at(tlsAdmin, "listclients"), 1, /closed the connection .*if it uses TLS, call it with --ca_cert/);
    assertOneLineError(await at(tlsAdmin, "--ca_cert", ca, "listclients"), 1, /Unauthenticated: .*client certificate/);
    assertOneLineError(
      await at(tlsAdmin, "--ca_cert", ca, "--client_cert", strangerCert, "--client_key", strangerKey, "listclients"),
      1,
      /Unauthenticated: client certificate refused/,
    );
    assertOneLineError(
      await at(tlsAdmin, "--ca_cert", otherCa, "--client_cert", operatorCert, "--client_key", operatorKey, "listclients"),
      1,
      /presented a certificate that is not trusted .*give --ca_cert with the CA that issued it/,
    );
    assertOneLineError(
      await at(tlsAdmin, "--ca_cert", ca, "--server_name", "wrong.example", "listclients"),
      1,
      /does not match the name asked for .*--server_name/,
    );
    assertOneLineError(await at(plainAdmin, "--ca_cert", ca, "listclients"), 1, /does not speak TLS .*leave out --ca_cert/);
    assertOneLineError(await at(tlsAdmin, "--client_cert", operatorCert, "listclients"), 2, /--client_cert and --client_key go together/);
    assertOneLineError(await at(tlsAdmin, "--ca_cert", join(dir, "missing.pem"), "listclients"), 2, /--ca_cert: cannot read .*missing\.pem/);
  });
});
