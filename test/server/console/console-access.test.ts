// Who may see the operator console, checked over real HTTP(S) against a real server: nothing but
// the sign-in page without a token or a client certificate (401/403, never data), tokens by
// cookie or bearer header, client certificates from the admin CA, the security headers on every
// answer, escaping of what clients send, the config checks, and fleetspeak-admin console-token.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { type CertAndKey, createCa, createServerCertificate } from "../../../src/common/certs.js";
import { printText } from "../../../src/common/textproto/index.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../../src/gen/fleetspeak_components/config_pb.js";
import { checkComponentsConfig, ConfigError } from "../../../src/server/config.js";
import { createLoginToken, verifyLoginToken } from "../../../src/server/console/login-token.js";
import { RawClient } from "../../support/raw-client.js";
import { startTestServer, type TestServer } from "../../support/server.js";
import { testServerPki } from "../../support/tls.js";

const ROOT = resolve(import.meta.dirname, "../../..");
const SECRET = "a-console-login-secret-of-40-bytes-000000";
const OTHER_SECRET = "another-console-login-secret-40-bytes-0000";

describe("console login tokens", () => {
  it("accepts its own tokens under any configured secret, and names who they are for", () => {
    const t = createLoginToken(SECRET, "alice", 60_000);
    const check = verifyLoginToken(t, [OTHER_SECRET, SECRET]);
    assert.ok(check.ok);
    assert.equal(check.ok && check.token.user, "alice");
  });

  it("refuses tokens of another secret, expired, tampered with, or not tokens at all, saying why", () => {
    const t = createLoginToken(SECRET, "alice", 60_000);
    const reason = (x: ReturnType<typeof verifyLoginToken>) => (x.ok ? "accepted" : x.reason);
    assert.match(reason(verifyLoginToken(t, [OTHER_SECRET])), /not made with this server's login secret/);
    const old = createLoginToken(SECRET, "alice", 60_000, Date.now() - 120_000);
    assert.match(reason(verifyLoginToken(old, [SECRET])), /expired at .*; make a new one/);
    const [p, payload, sig] = t.split(".");
    const forged = Buffer.from(JSON.stringify({ u: "mallory", exp: Date.now() + 1e9 })).toString("base64url");
    assert.match(reason(verifyLoginToken(`${p}.${forged}.${sig}`, [SECRET])), /not made with/);
    assert.match(reason(verifyLoginToken(`${p}.${payload}`, [SECRET])), /not a console login token/);
    assert.match(reason(verifyLoginToken("x".repeat(5000), [SECRET])), /not a console login token/);
  });

  it("will not make a token from a short secret, for a strange user name, or for too long", () => {
    assert.throws(() => createLoginToken("short", "alice", 60_000), /shorter than 32 bytes/);
    assert.throws(() => createLoginToken(SECRET, "al ice<", 60_000), /user/);
    assert.throws(() => createLoginToken(SECRET, "alice", 90 * 86_400_000), /up to 31 days/);
  });
});

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

async function get(url: string, init: RequestInit = {}): Promise<Answer> {
  const r = await fetch(url, { redirect: "manual", ...init });
  return { status: r.status, headers: Object.fromEntries(r.headers), body: await r.text() };
}

describe("console over HTTP with login tokens", () => {
  let ts: TestServer;
  let base: string;
  let client: RawClient;
  const token = () => createLoginToken(SECRET, "tester", 60_000);

  before(async () => {
    const pki = testServerPki();
    ts = await startTestServer({
      components: {
        httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
        adminConfig: { listenAddress: "127.0.0.1:0", console: { listenAddress: "127.0.0.1:0", loginSecret: [SECRET] } },
      },
    });
    base = `http://${ts.server.consoleAddress}`;
    client = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, labels: ["<script>alert(1)</script>"] });
    assert.equal((await client.poll({})).status, 200);
  });
  after(() => ts?.stop());

  it("answers 401 and the sign-in page, without data, to every page asked for without a token", async () => {
    for (const path of ["/", "/servers", "/services", `/clients/${client.clientIdHex}`, `/?by=id&q=${client.clientIdHex}`]) {
      const a = await get(base + path);
      assert.equal(a.status, 401, path);
      assert.match(a.body, /<title>Sign in/);
      assert.ok(!a.body.includes(client.clientIdHex), `${path}: no client ID`);
      assert.ok(!a.body.includes("alert(1)"), `${path}: no label`);
    }
    const wrong = await get(`${base}/`, { headers: { authorization: `Bearer ${createLoginToken(OTHER_SECRET, "x", 60_000)}` } });
    assert.equal(wrong.status, 401);
    assert.match(wrong.body, /not made with this server&#39;s login secret/);
  });

  it("sends the security headers with every answer", async () => {
    for (const a of [await get(`${base}/`), await get(`${base}/`, { headers: { authorization: `Bearer ${token()}` } })]) {
      assert.match(String(a.headers["content-security-policy"]), /default-src 'none'; script-src 'self'; style-src 'self'/);
      assert.match(String(a.headers["content-security-policy"]), /frame-ancestors 'none'/);
      assert.equal(a.headers["x-content-type-options"], "nosniff");
      assert.equal(a.headers["x-frame-options"], "DENY");
      assert.equal(a.headers["referrer-policy"], "no-referrer");
      assert.equal(a.headers["cache-control"], "no-store");
    }
  });

  it("signs in through the form: an HttpOnly, SameSite=Strict cookie that then opens the pages", async () => {
    const bad = await get(`${base}/login`, { method: "POST", body: new URLSearchParams({ token: "nope" }) });
    assert.equal(bad.status, 401);
    const good = await get(`${base}/login`, { method: "POST", body: new URLSearchParams({ token: token() }) });
    assert.equal(good.status, 303);
    assert.equal(good.headers.location, "/");
    const cookie = String(good.headers["set-cookie"]);
    assert.match(cookie, /^fleetspeak_console=fsc1\.[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
    const page = await get(`${base}/`, { headers: { cookie: cookie.split(";")[0]! } });
    assert.equal(page.status, 200);
    assert.ok(page.body.includes(client.clientIdHex));
    const out = await get(`${base}/logout`, { method: "POST", headers: { cookie: cookie.split(";")[0]! } });
    assert.equal(out.status, 303);
    assert.match(String(out.headers["set-cookie"]), /fleetspeak_console=; Path=\/; Max-Age=0/);
  });

  it("escapes what clients send: a label '<script>' is text in the HTML, and only our own scripts load", async () => {
    const a = await get(`${base}/clients/${client.clientIdHex}`, { headers: { authorization: `Bearer ${token()}` } });
    assert.equal(a.status, 200);
    assert.ok(a.body.includes("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert.ok(!a.body.includes("<script>alert(1)"));
    const scripts = [...a.body.matchAll(/<script\b[^>]*>/g)].map((m) => m[0]);
    for (const s of scripts) assert.match(s, /^<script (src="\/assets\/[\w.]+" defer|type="application\/json" id="charts")>$/, s);
  });

  it("is read-only, answers unknown pages and clients with 404, and serves its assets to anyone", async () => {
    const auth = { authorization: `Bearer ${token()}` };
    assert.equal((await get(`${base}/`, { method: "POST", headers: auth })).status, 405);
    assert.equal((await get(`${base}/clients/00000000000000ff`, { headers: auth })).status, 404);
    assert.equal((await get(`${base}/nothing`, { headers: auth })).status, 404);
    const js = await get(`${base}/assets/uPlot.iife.min.js`);
    assert.equal(js.status, 200);
    assert.match(String(js.headers["content-type"]), /javascript/);
    assert.match(js.body, /uPlot/);
  });
});

describe("console over HTTPS with client certificates", () => {
  let ts: TestServer;
  const adminCa = createCa("admin");
  const serverCert = createServerCertificate("admin", adminCa, ["localhost", "127.0.0.1"]);
  const operator = createServerCertificate("operator", adminCa, ["operator"]);
  const stranger = createServerCertificate("stranger", createCa("other"), ["operator"]);

  function getTls(path: string, cert?: CertAndKey): Promise<{ status: number; body: string }> {
    const [host, port] = ts.server.consoleAddress!.split(":");
    return new Promise((resolveAnswer, reject) => {
      const req = httpsRequest(
        {
          host,
          port: Number(port),
          path,
          servername: "localhost",
          ca: adminCa.certPem,
          agent: false,
          ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}),
        },
        (res) => {
          let body = "";
          res.on("data", (c: Buffer) => {
            body += c.toString();
          });
          res.on("end", () => resolveAnswer({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on("error", reject);
      req.end();
    });
  }

  before(async () => {
    ts = await startTestServer({
      components: {
        adminConfig: {
          listenAddress: "127.0.0.1:0",
          tlsCertificates: serverCert.certPem + adminCa.certPem,
          tlsKey: serverCert.keyPem,
          clientCaCertificates: adminCa.certPem,
          console: { listenAddress: "127.0.0.1:0" },
        },
      },
    });
  });
  after(() => ts?.stop());

  it("lets in a browser with a certificate from the admin CA, and nobody else (403)", async () => {
    const ok = await getTls("/servers", operator);
    assert.equal(ok.status, 200);
    assert.match(ok.body, /certificate .*CN=operator/);
    for (const cert of [undefined, stranger]) {
      const refused = await getTls("/servers", cert);
      assert.equal(refused.status, 403);
      assert.match(refused.body, /client certificate issued by a CA in/);
      assert.ok(!refused.body.includes("class=\"servers\""), "no server list");
    }
  });
});

describe("console config", () => {
  const check = (admin: object) =>
    checkComponentsConfig(create(ComponentsConfigSchema, { adminConfig: { listenAddress: "127.0.0.1:6061", ...admin } }), "admin.config", "/tmp/x.sqlite");

  it("refuses a console nobody could sign in to, a short secret and a missing address, naming the field", () => {
    assert.throws(() => check({ console: { listenAddress: "127.0.0.1:6062" } }), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /^admin\.config: admin_config\.console: nobody could sign in; set console\.login_secret/);
      return true;
    });
    assert.throws(() => check({ console: { listenAddress: "127.0.0.1:6062", loginSecret: ["short"] } }), /login_secret #1 is shorter than 32 bytes/);
    assert.throws(() => check({ console: { loginSecret: [SECRET] } }), /console\.listen_address is empty/);
    assert.throws(() => check({ console: { listenAddress: "nonsense:port", loginSecret: [SECRET] } }), /console\.listen_address/);
  });

  it("says where the console runs, and warns when tokens would cross the network in clear", () => {
    const local = check({ console: { listenAddress: "127.0.0.1:6062", loginSecret: [SECRET] } });
    assert.ok(local.summary.includes("operator console on http://127.0.0.1:6062 (sign-in: login tokens)"));
    assert.equal(local.warnings.filter((w) => w.includes("console")).length, 0);
    const open = check({ console: { listenAddress: "0.0.0.0:6062", loginSecret: [SECRET] } });
    assert.ok(open.warnings.some((w) => /admin_config\.console: login tokens and pages would cross the network/.test(w)));
  });
});

describe("fleetspeak-admin console-token", () => {
  const run = promisify(execFile);
  const dir = mkdtempSync(join(tmpdir(), "fs-console-token-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const admin = (...args: string[]) =>
    run(process.execPath, [join(ROOT, "bin/fleetspeak-admin.js"), ...args]).catch((e: { code: number; stderr: string }) => ({
      code: e.code,
      stdout: "",
      stderr: e.stderr,
    }));

  it("prints a token that the configured secret accepts, and where to use it", async () => {
    const path = join(dir, "admin.components.config");
    const cfg = create(ComponentsConfigSchema, {
      adminConfig: { listenAddress: "127.0.0.1:6061", console: { listenAddress: "127.0.0.1:6062", loginSecret: [SECRET] } },
    });
    writeFileSync(path, printText(ComponentsConfigSchema, cfg));
    const out = await admin("console-token", "--components_config", path, "--user", "alice", "--valid_for", "1h");
    assert.ok("stdout" in out && out.stdout !== "", JSON.stringify(out));
    const check = verifyLoginToken(out.stdout.trim(), [SECRET]);
    assert.ok(check.ok && check.token.user === "alice");
    assert.ok(check.ok && Math.abs(check.token.expiresMs - (Date.now() + 3600_000)) < 60_000);
    assert.match(out.stderr, /sign in at http:\/\/127\.0\.0\.1:6062\/login with this token \(user alice, valid until /);
  });

  it("explains a config without a console, a missing file and a bad duration (exit 2)", async () => {
    const path = join(dir, "plain.components.config");
    writeFileSync(path, 'admin_config { listen_address: "127.0.0.1:6061" }\n');
    const none = await admin("console-token", "--components_config", path);
    assert.equal((none as { code: number }).code, 2);
    assert.match(none.stderr, /admin_config\.console is not set, so this server runs no console/);
    const missing = await admin("console-token", "--components_config", join(dir, "nope"));
    assert.match(missing.stderr, /nope: cannot read the components config file/);
    const bad = await admin("console-token", "--components_config", path, "--valid_for", "forever");
    assert.match(bad.stderr, /--valid_for: bad duration "forever"/);
  });
});
