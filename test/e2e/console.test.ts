// The operator console in a real headless Chromium, against real servers with real streaming
// clients (spec-written raw clients): what an operator would look at, checked as they would read
// it. One server on SQLite for the fleet, client, servers and services pages; then a split
// deployment (two frontend-only processes and an admin process sharing a MariaDB database) for
// the server list. Screenshots of every page go to test-artifacts/console/.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Page } from "playwright-core";
import { MessageAckDataSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { ResourceUsageDataSchema } from "../../src/gen/fleetspeak_monitoring/resource_pb.js";
import { ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";
import { randomBroadcastId } from "../../src/common/ids.js";
import { printText } from "../../src/common/textproto/index.js";
import { createLoginToken } from "../../src/server/console/login-token.js";
import { launchBrowser, openPage, reloadUntil, type TestBrowser, visibleText } from "../support/browser.js";
import { freePort } from "../support/haproxy.js";
import { createTestDatabase, type TestDatabase } from "../support/mariadb.js";
import { type ManagedProcess, startServerProcess } from "../support/processes.js";
import { outMessage, RawClient, type RawStream } from "../support/raw-client.js";
import { startTestServer, type TestServer } from "../support/server.js";
import { testServerPki } from "../support/tls.js";

const SECRET = "console-test-secret-0123456789abcdef";
const XSS_LABEL = `<script>window.pwned=1</script><img src=x onerror="window.pwned=2">`;

async function signIn(page: Page, base: string): Promise<void> {
  await page.goto(`${base}/`);
  assert.equal(await page.title(), "Sign in · Fleetspeak console");
  await page.fill("#token", createLoginToken(SECRET, "e2e", 3600_000));
  await Promise.all([page.waitForURL(`${base}/`), page.click("button[type=submit]")]);
  await page.waitForSelector("body[data-ready=true]");
}

/** The headline number above a caption on the page (the "stat" boxes). */
async function stat(page: Page, caption: string): Promise<string> {
  return visibleText(page.locator(".stat", { has: page.locator(".caption", { hasText: caption }) }).locator(".value"));
}

describe("operator console in Chromium: one server, streaming clients", { timeout: 180_000 }, () => {
  let ts: TestServer;
  let browser: TestBrowser;
  let page: Page;
  let base: string;
  const streams: RawStream[] = [];
  const clients: RawClient[] = [];
  let poller: RawClient;
  /** Script errors and console errors (a Content-Security-Policy violation shows as one). */
  const pageErrors: string[] = [];

  before(async () => {
    const pki = testServerPki();
    ts = await startTestServer({
      components: {
        httpsConfig: { listenAddress: "127.0.0.1:0", certificates: pki.certChainPem, key: pki.keyPem },
        adminConfig: { listenAddress: "127.0.0.1:0", console: { listenAddress: "127.0.0.1:0", loginSecret: [SECRET] } },
      },
      overrides: { heartbeatIntervalMs: 300 },
    });
    base = `http://${ts.server.consoleAddress}`;
    const allowed = { AllowedMessages: { system: 100n, TestService: 100n } };
    for (let i = 0; i < 3; i++) {
      const c = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, labels: ["linux", `rack-${i % 2}`] });
      clients.push(c);
      streams.push(await c.stream(allowed));
    }
    poller = new RawClient({ host: "127.0.0.1", port: ts.port, ca: ts.caPem, labels: ["windows", XSS_LABEL] });
    assert.equal((await poller.poll({})).status, 200);
    browser = await launchBrowser();
    page = await browser.newPage();
    page.on("dialog", (d) => assert.fail(`a page opened a dialog: ${d.message()}`));
    page.on("pageerror", (e) => pageErrors.push(`script error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 401/.test(m.text())) {
        pageErrors.push(m.text());
      }
    });
  });

  after(async () => {
    for (const s of streams) s.close();
    await browser?.close();
    await ts?.stop();
  });

  it("shows only the sign-in page, with no data, until a login token is given", async () => {
    const res = await page.goto(`${base}/`);
    assert.equal(res?.status(), 401);
    const text = await visibleText(page.locator("body"));
    for (const c of [...clients, poller]) assert.ok(!text.includes(c.clientIdHex), "no client ID before signing in");
    await page.fill("#token", "fsc1.not.valid");
    await page.click("button[type=submit]");
    assert.match(await visibleText(page.locator(".error")), /not made with this server's login secret|not a console login token/);
    await signIn(page, base);
  });

  it("fleet page: the right counts, the labels, every client, and a label '<script>' shown as text", async () => {
    await reloadUntil(page, `${base}/`, "3 streams", async () => (await stat(page, "streaming now")) === "3");
    assert.equal(await stat(page, "clients in total"), "4");
    assert.equal(await stat(page, "seen in the last 5 min"), "4");
    assert.equal(await stat(page, "seen in the last hour"), "4");
    assert.equal(await stat(page, "seen in the last day"), "4");
    const text = await visibleText(page.locator("main"));
    for (const c of [...clients, poller]) assert.ok(text.includes(c.clientIdHex), `client ${c.clientIdHex} listed`);
    const labelRow = page.locator("table.labels tr", { has: page.locator(".label", { hasText: /^linux$/ }) });
    assert.match(await visibleText(labelRow), /linux\s+client\s+3/);
    assert.ok((await page.locator(".label", { hasText: XSS_LABEL }).count()) > 0, "the label is shown as text");
    assert.equal(await page.evaluate("typeof window.pwned"), "undefined", "no script from a label ran");
    await browser.screenshot(page, "fleet");
  });

  it("fleet page: searches by client ID prefix and by label", async () => {
    const target = clients[1]!.clientIdHex;
    await page.selectOption("select[name=by]", "id");
    await page.fill("input[name=q]", target.slice(0, 6));
    await Promise.all([page.waitForURL(/by=id/), page.click("form.search button")]);
    await page.waitForSelector("body[data-ready=true]");
    assert.ok((await visibleText(page.locator("main"))).includes(target));
    await openPage(page, `${base}/?by=label&q=rack-1`);
    const rows = await page.locator("table tbody tr a.mono").allInnerTexts();
    assert.deepEqual(rows, [clients[1]!.clientIdHex]);
    await openPage(page, `${base}/?by=id&q=xyz`);
    assert.match(await visibleText(page.locator(".error")), /1 to 16 hex digits/);
  });

  it("client page: a message pending, then delivered once the client acknowledges it; failures with reasons; resource usage", async () => {
    const c = clients[0]!;
    const s = streams[0]!;
    // Resource usage of a daemon, and a message to a service the server does not have.
    const now = Date.now();
    const usage = (cpu: number, mem: number, t: number) =>
      outMessage(
        "system",
        "ResourceUsage",
        anyPack(
          ResourceUsageDataSchema,
          create(ResourceUsageDataSchema, {
            scope: "GRR",
            pid: 4242n,
            processStartTime: timestampFromMs(now - 60_000),
            dataTimestamp: timestampFromMs(t),
            resourceUsage: { meanUserCpuRate: cpu, meanSystemCpuRate: cpu / 2, meanResidentMemory: mem * 1024 * 1024 },
          }),
        ),
      );
    s.send({ messages: [usage(12, 80, now - 2000), outMessage("NoSuchService", "Hello")] });
    await s.next();
    await new Promise((r) => setTimeout(r, 1100));
    s.send({ messages: [usage(30, 95, now)] });
    await s.next();

    const messageId = Buffer.alloc(32, 9);
    messageId.writeUInt32BE(now % 2 ** 32, 0);
    await ts.admin.insertMessage({
      messageId,
      source: { serviceName: "TestService" },
      destination: { clientId: c.clientId, serviceName: "TestService" },
      messageType: "Ping",
    });
    const pushed = await s.next(5_000);
    assert.equal(pushed?.messages.length, 1, "the message went out on the stream");

    const url = `${base}/clients/${c.clientIdHex}`;
    await openPage(page, url);
    assert.equal(await stat(page, "messages pending"), "1", "sent but not yet acknowledged");
    assert.match(await visibleText(page.locator("table.pending-by-service tbody")), /TestService\s+1/);
    assert.match(await visibleText(page.locator("table.pending-list tbody")), /Ping/);
    assert.match(await visibleText(page.locator("dl.facts")), /Stream held by\s+\S+:\d+\s+up/);
    assert.match(await visibleText(page.locator("table.failed tbody")), /client → NoSuchService[\s\S]*unknown service "NoSuchService"/);
    await page.waitForSelector(".chart[data-chart=cpu] canvas");
    await page.waitForSelector(".chart[data-chart=memory] canvas");
    await browser.screenshot(page, "client-pending");

    s.send({ messages: [outMessage("system", "MessageAck", anyPack(MessageAckDataSchema, create(MessageAckDataSchema, { messageIds: [messageId] })))] });
    await s.next();
    await reloadUntil(page, url, "the message delivered", async () => (await stat(page, "messages pending")) === "0");
    assert.match(await visibleText(page.locator("main")), /Nothing pending: every message to this client was delivered/);
    await browser.screenshot(page, "client-delivered");
  });

  it("servers page: this server up, with what it runs and its chart", async () => {
    await reloadUntil(page, `${base}/servers`, "the server with its streams", async () =>
      /frontend \+ admin \+ console\s+3\b/.test(await visibleText(page.locator("table.servers tbody"))),
    );
    assert.equal(await page.locator("table.servers tbody tr").count(), 1);
    assert.match(await visibleText(page.locator("table.servers tbody tr .pill")), /^up$/);
    await page.waitForSelector(".cards .chart canvas");
    await browser.screenshot(page, "servers");
  });

  it("services page: per-service flow, queues and broadcasts", async () => {
    await ts.admin.createBroadcast({
      broadcast: {
        broadcastId: randomBroadcastId(),
        source: { serviceName: "TestService" },
        messageType: "Announce",
        requiredLabels: [{ serviceName: "client", label: "linux" }],
        expirationTime: timestampFromMs(Date.now() + 3600_000),
      },
      limit: 100n,
    });
    // Rates and queues are read at most every few seconds (shared by every viewer): wait for them.
    await reloadUntil(page, `${base}/services`, "the services and the broadcast", async () => {
      const text = await visibleText(page.locator("main"));
      return /NoSuchService/.test(text) && /TestService → Announce/.test(text) && /TestService\s/.test(await visibleText(page.locator("table.services tbody")));
    });
    const rows = await visibleText(page.locator("table.services tbody"));
    assert.match(rows, /TestService/);
    assert.match(rows, /NoSuchService/, "the service a client named");
    assert.match(await visibleText(page.locator("table.broadcasts tbody")), /TestService → Announce\s+linux\s+\d+ \/ 100/);
    await browser.screenshot(page, "services");
  });

  it("ran every page without a script error or a Content-Security-Policy violation", () => {
    assert.deepEqual(pageErrors, []);
  });
});

describe("operator console in Chromium: split deployment on MariaDB", { timeout: 180_000 }, () => {
  let db: TestDatabase;
  const frontends: ManagedProcess[] = [];
  let admin: ManagedProcess;
  let browser: TestBrowser;
  const streams: RawStream[] = [];
  const fePorts: number[] = [];
  const notifyPorts: number[] = [];
  let base: string;

  before(async () => {
    db = await createTestDatabase();
    const pki = testServerPki();
    const services = printText(ServerConfigSchema, create(ServerConfigSchema, { services: [{ name: "TestService", factory: "NOOP" }] }));
    for (const i of [0, 1]) {
      fePorts.push(await freePort());
      notifyPorts.push(await freePort());
      const c = create(ComponentsConfigSchema, {
        mysqlDataSourceName: db.dsn,
        httpsConfig: { listenAddress: `127.0.0.1:${fePorts[i]}`, certificates: pki.certChainPem, key: pki.keyPem },
        notificationListenAddress: `127.0.0.1:${notifyPorts[i]}`,
        notificationPublicAddress: `127.0.0.1:${notifyPorts[i]}`,
      });
      frontends.push(await startServerProcess({ name: `frontend-${i + 1}`, components: printText(ComponentsConfigSchema, c), services }));
    }
    const consolePort = await freePort();
    const a = create(ComponentsConfigSchema, {
      mysqlDataSourceName: db.dsn,
      adminConfig: {
        listenAddress: `127.0.0.1:${await freePort()}`,
        console: { listenAddress: `127.0.0.1:${consolePort}`, loginSecret: [SECRET] },
      },
      notificationUseHttpNotifier: true,
    });
    admin = await startServerProcess({ name: "admin", components: printText(ComponentsConfigSchema, a), services });
    base = `http://127.0.0.1:${consolePort}`;
    for (const port of fePorts) {
      for (let i = 0; i < 2; i++) {
        const c = new RawClient({ host: "127.0.0.1", port, ca: pki.ca.certPem, labels: ["split"] });
        streams.push(await c.stream({}));
      }
    }
    browser = await launchBrowser();
  });

  after(async () => {
    for (const s of streams) s.close();
    await browser?.close();
    await Promise.all([...frontends, admin].filter(Boolean).map((p) => p.stop()));
    await db?.drop();
  });

  it("lists both frontends and the admin server, each up, with the clients streaming to each frontend", async () => {
    const page = await browser.newPage();
    await signIn(page, base);
    const url = `${base}/servers`;
    const rowOf = (port: number) => page.locator("table.servers tbody tr", { hasText: `:${port}` });
    await reloadUntil(page, url, "both frontends holding two clients each", async () => {
      const text = await visibleText(page.locator("table.servers tbody"));
      return fePorts.every((p) => new RegExp(`:${p}[\\s\\S]*?up\\s+frontend\\s+2\\b`).test(text));
    });
    for (const port of fePorts) {
      const row = await visibleText(rowOf(port));
      assert.match(row, /\bup\b/);
      assert.match(row, /frontend/);
    }
    const all = await page.locator("table.servers tbody tr").allInnerTexts();
    assert.equal(all.length, 3, `two frontends and one admin server:\n${all.join("\n")}`);
    assert.equal(all.filter((r) => /admin \+ console/.test(r)).length, 1);
    await page.waitForSelector(".cards .chart canvas");
    await browser.screenshot(page, "servers-split");
    await reloadUntil(page, `${base}/`, "4 streams", async () => (await stat(page, "streaming now")) === "4");
    assert.equal(await stat(page, "clients in total"), "4");
  });
});
