// deploy/haproxy/haproxy.cfg (what fleetspeak-config writes for deploy/examples/distributed.config)
// is started, not only checked with `haproxy -c`: as it is, in a network namespace of its own (so
// its fixed ports are free), under a small open-file limit and under this machine's. It sets no
// maxconn, so HAProxy sizes it from the limit; a fixed one above the limit does not start. And its
// health checks do what the docs say, against real servers answering 200 or 503.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { type AddressInfo, connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { renderHaproxyConfig } from "../../src/cli/haproxy-config.js";
import { freePort, HAPROXY_BIN } from "../support/haproxy.js";
import { type ManagedProcess, startHaproxyProcess } from "../support/processes.js";

const ROOT = resolve(import.meta.dirname, "../..");
const CONFIG = join(ROOT, "deploy/haproxy/haproxy.cfg");
const run = promisify(execFile);

/** Reads `show info` from a stats socket into name → value. */
function showInfo(socket: string): Promise<Map<string, string>> {
  return new Promise((resolveInfo, reject) => {
    let text = "";
    const s = connect(socket, () => s.end("show info\n"));
    s.on("data", (d) => {
      text += d.toString();
    });
    s.on("error", reject);
    s.on("close", () => resolveInfo(new Map(text.split("\n").map((l) => l.split(": ", 2) as [string, string]))));
  });
}

describe("deploy/haproxy/haproxy.cfg", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "fs-haproxy-cfg-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * Starts HAProxy as a daemon with the deploy config plus `extra` (a second -f file), under an
   * open-file limit, in a new network namespace. The launcher exits only once every listener is
   * bound; returns what `show info` says, then stops it. Rejects with HAProxy's alert when it fails.
   */
  async function start(name: string, nofile: number, extra = ""): Promise<Map<string, string>> {
    const socket = join(dir, `${name}.sock`);
    const pidFile = join(dir, `${name}.pid`);
    const extraFile = join(dir, `${name}.cfg`);
    writeFileSync(extraFile, `global\n  stats socket ${socket}\n${extra}`);
    await run("prlimit", [
      `--nofile=${nofile}:${nofile}`,
      "unshare",
      "--net",
      HAPROXY_BIN,
      "-D",
      "-f",
      CONFIG,
      "-f",
      extraFile,
      "-p",
      pidFile,
    ]);
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    try {
      return await showInfo(socket);
    } finally {
      process.kill(pid, "SIGTERM");
    }
  }

  it("starts under a 1024 open-file limit, sizing maxconn from it", async () => {
    const info = await start("small", 1024);
    assert.ok(Number(info.get("Ulimit-n")) <= 1024, `Ulimit-n ${info.get("Ulimit-n")}`);
    const maxconn = Number(info.get("Maxconn"));
    assert.ok(maxconn > 400 && maxconn <= 512, `Maxconn ${maxconn}`);
  });

  it("starts under this machine's open-file limit, sizing maxconn from it", async () => {
    const { stdout } = await run("sh", ["-c", "ulimit -Hn"]);
    const limit = Number(stdout.trim());
    const info = await start("machine", limit);
    assert.ok(Number(info.get("Ulimit-n")) <= limit, `Ulimit-n ${info.get("Ulimit-n")}`);
    assert.ok(Number(info.get("Maxconn")) > limit / 2 - 100, `Maxconn ${info.get("Maxconn")} for ${limit} open files`);
  });

  it("would not start with a fixed maxconn above what the limit allows (why it sets none)", async () => {
    await assert.rejects(start("fixed", 20_000, "  maxconn 200000\n"), /Cannot raise FD limit/);
  });

  it("health-checks the frontends and the admin servers over HTTP on their health_check_config port", () => {
    const text = readFileSync(CONFIG, "utf8");
    const servers = text.split("\n").filter((l) => l.trim().startsWith("server "));
    assert.equal(servers.filter((s) => / check port 8080 /.test(s)).length, 4);
    assert.equal(servers.filter((s) => / backup$/.test(s)).length, 4, "each server also as an unchecked backup");
    assert.equal(text.match(/^ {2}option httpchk GET \/$/gm)?.length, 2);
    assert.equal(text.match(/^ {2}option allbackups$/gm)?.length, 2);
    assert.doesNotMatch(text, /^\s*maxconn/m);
  });
});

describe("the HAProxy config fleetspeak-config writes, against servers that answer their health checks", () => {
  const servers: Server[] = [];
  let haproxy: ManagedProcess | undefined;
  after(async () => {
    await haproxy?.stop();
    for (const s of servers) s.close();
  });

  /** A server that says its name to each connection, and a health endpoint answering `health()`. */
  async function backend(name: string, health: () => number) {
    const tcp = createServer((c) => {
      // HAProxy's own probes and the readiness check hang up without reading.
      c.on("error", () => {});
      c.end(name);
    });
    const http = createHttpServer((_req, res) => res.writeHead(health()).end());
    servers.push(tcp, http);
    const port = async (s: Server) => {
      await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
      return (s.address() as AddressInfo).port;
    };
    return { name, address: `127.0.0.1:${await port(tcp)}`, healthPort: await port(http) };
  }
  const answer = (port: number) =>
    new Promise<string>((resolveAnswer, reject) => {
      let text = "";
      const c = connect(port, "127.0.0.1");
      c.on("data", (d) => {
        text += d.toString();
      });
      c.on("end", () => resolveAnswer(text));
      c.on("error", reject);
    });

  it("sends clients only to the servers that reach the database, and to all of them when none does", async () => {
    const status = { "frontend-1": 200, "frontend-2": 503 };
    const tier = [
      await backend("frontend-1", () => status["frontend-1"]),
      await backend("frontend-2", () => status["frontend-2"]),
    ];
    const port = await freePort();
    const config = renderHaproxyConfig("a test", [
      { title: "t", listenName: "clients", backendName: "frontends", bind: `127.0.0.1:${port}`, balance: "leastconn", sendProxy: false, servers: tier },
    ]).replace(/inter 2s/g, "inter 100ms");
    haproxy = await startHaproxyProcess("haproxy", config, [port]);
    await haproxy.waitFor(/Server frontends\/frontend-2 is DOWN/);
    for (let i = 0; i < 6; i++) assert.equal(await answer(port), "frontend-1");

    status["frontend-1"] = 503;
    await haproxy.waitFor(/Server frontends\/frontend-1 is DOWN.*Running on backup/);
    const answers = new Set<string>();
    for (let i = 0; i < 6; i++) answers.add(await answer(port));
    assert.deepEqual([...answers].sort(), ["frontend-1", "frontend-2"]);
  });
});
