// Client benchmark: resident memory of an idle fleetspeak-client, then messages per second from
// one daemon (Python, on Fleetspeak's channel) through the client over a streaming connection to
// a server on this machine, with the client's memory and CPU under that load.
//
//   npm run bench -- client [--messages 20000] [--size 100] [--server real|fake] [--idle-seconds 10]
//                           [--client-exe FILE [--cold-exe]] [--record]
//
// --server real (default) runs bin/fleetspeak-server.js (SQLite, NOOP service) and counts the
// messages it ingests from its /metrics; --server fake uses the client tests' frontend, which
// stores nothing, to see the client's own ceiling. --client-exe runs that single executable (`npm
// run package:client`) with an empty environment instead of bin/fleetspeak-client.js.
// --cold-exe first drops that file's pages from the page cache (as after a reboot): the
// executable's file-backed RSS depends on how its pages came into the cache — a file just written
// (by postject, by dpkg) is cached in large folios that the kernel maps whole, while pages read
// from disk on demand come in smaller pieces (bench/RESULTS.md, shipping: ~12 MiB of difference).
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { type CertAndKey, createCa } from "../src/common/certs.js";
import { ClientProcess, daemonServiceText, tempDir, testDaemonArgv, writeClientConfig } from "../test/client/support/client-env.js";
import { FakeFrontend } from "../test/client/support/fake-frontend.js";
import { benchPki } from "./loadgen/identities.js";
import { cpuSeconds, rssBytes, rssSplit } from "./loadgen/processes.js";
import { noopServices, startBenchServer } from "./loadgen/servers.js";

const MiB = 1024 * 1024;

interface Target {
  address: string;
  ca: CertAndKey;
  /** Messages of type Flood the server has taken in so far. */
  count(): Promise<number>;
  stop(): Promise<void>;
}

async function realServer(): Promise<Target> {
  const pki = benchPki();
  const server = await startBenchServer({ name: "client-bench", frontend: {}, services: noopServices("TestService") });
  const ca = { certPem: pki.caCertPem } as CertAndKey;
  return {
    address: `127.0.0.1:${server.frontendPort}`,
    ca,
    async count() {
      const text = await (await fetch(`http://${server.metricsAddress}/metrics`)).text();
      let n = 0;
      for (const line of text.split("\n")) {
        if (line.startsWith("fleetspeak_messages_ingested_total{") && line.includes('message_type="Flood"')) {
          n += Number(line.slice(line.lastIndexOf(" ") + 1));
        }
      }
      return n;
    },
    stop: () => server.stop(),
  };
}

async function fakeServer(): Promise<Target> {
  const ca = createCa("bench");
  const ff = await FakeFrontend.start({ ca });
  return {
    address: ff.address,
    ca,
    count: async () => {
      let n = 0;
      for (const r of ff.received) if (r.message.messageType === "Flood") n++;
      return n;
    },
    stop: () => ff.stop(),
  };
}

function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

/**
 * Writes a file's dirty pages out and drops its pages from the page cache (posix_fadvise
 * DONTNEED, which Node does not expose; Python does). Pages some process has mapped stay.
 */
function dropFromPageCache(file: string): void {
  const script = "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nos.fsync(fd)\nos.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)";
  execFileSync("python3", ["-c", script, file], { stdio: "inherit" });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      messages: { type: "string", default: "20000" },
      size: { type: "string", default: "100" },
      server: { type: "string", default: "real" },
      "idle-seconds": { type: "string", default: "10" },
      "client-exe": { type: "string" },
      "cold-exe": { type: "boolean", default: false },
      record: { type: "boolean", default: false },
    },
  });
  const messages = Number(values.messages);
  const size = Number(values.size);
  const target = values.server === "fake" ? await fakeServer() : await realServer();
  const dir = tempDir("fs-bench-client-");
  const trigger = join(dir, "go");
  const files = writeClientConfig(
    {
      ca: target.ca,
      servers: [target.address],
      communicator: "min_failure_delay_seconds: 1\n",
      textServices: {
        "flood.service": daemonServiceText(
          "TestService",
          testDaemonArgv("floodwhen", trigger, String(messages), String(size)),
          "    disable_resource_monitoring: true",
        ),
      },
    },
    join(dir, "client"),
  );
  // Run as an installed binary runs: the script itself, so that its shebang's node flags apply.
  const exe = values["client-exe"];
  if (values["cold-exe"]) {
    if (!exe) throw new Error("--cold-exe applies to --client-exe FILE");
    dropFromPageCache(resolve(exe));
  }
  const client = new ClientProcess(["-config", files.configFile], { FLEETSPEAK_LOG_LEVEL: "warn" }, !exe, exe && resolve(exe));
  try {
    await sleep(Number(values["idle-seconds"]) * 1000);
    const idleRss = rssBytes(client.pid);
    const idleSplit = rssSplit(client.pid);

    let maxRss = idleRss;
    const cpu0 = cpuSeconds(client.pid);
    const before = await target.count();
    writeFileSync(trigger, "");
    const t0 = performance.now();
    let done = before;
    while (done - before < messages) {
      await sleep(50);
      maxRss = Math.max(maxRss, rssBytes(client.pid));
      done = await target.count();
      if (performance.now() - t0 > 300_000) throw new Error(`only ${done - before} of ${messages} messages in 5 min`);
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(client.pid) - cpu0;
    await sleep(2000);
    const afterRss = rssBytes(client.pid);
    const rate = Math.round(messages / seconds);
    const row = {
      date: new Date().toISOString().slice(0, 10),
      commit: gitCommit(),
      machine: `${cpus().length} cores, ${cpus()[0]?.model.split(" ").slice(0, 2).join(" ")}`,
      command: `npm run bench -- client ${argv.filter((a) => a !== "--record").join(" ")}`.trim(),
      server: values.server === "fake" ? "test frontend (stores nothing)" : "fleetspeak-server (SQLite)",
      idleMiB: (idleRss / MiB).toFixed(1),
      loadMiB: (maxRss / MiB).toFixed(1),
      afterMiB: (afterRss / MiB).toFixed(1),
      rate,
      cpuPerMsgUs: ((cpu / messages) * 1e6).toFixed(0),
      load: loadavg()[0]!.toFixed(1),
    };
    console.log(
      `client: idle RSS ${row.idleMiB} MiB (anonymous ${(idleSplit.anon / MiB).toFixed(1)}, file-backed ${(idleSplit.file / MiB).toFixed(1)}), max RSS under load ${row.loadMiB} MiB, after ${row.afterMiB} MiB; ` +
        `${messages} × ${size} B from one daemon in ${seconds.toFixed(2)} s = ${rate} msgs/s to ${row.server}; ` +
        `client CPU ${row.cpuPerMsgUs} µs/message; load average ${row.load}`,
    );
    if (values.record) {
      recordRow(
        `| ${row.date} | ${row.commit} | ${row.machine} | \`${row.command}\` | ${row.server} | ${size} B | ${row.idleMiB} | ${row.loadMiB} | ${row.afterMiB} | ${row.rate} | ${row.cpuPerMsgUs} | ${row.load} |`,
      );
    }
  } finally {
    await client.close();
    await target.stop();
  }
}

const HEADER = "## client: fleetspeak-client memory and daemon → server throughput (`npm run bench -- client`)";

/** Adds a row to this benchmark's table in RESULTS.md (the section is created on first use). */
function recordRow(row: string): void {
  const path = join(import.meta.dirname, "RESULTS.md");
  const lines = readFileSync(path, "utf8").split("\n");
  const at = lines.indexOf(HEADER);
  if (at < 0) {
    while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
    lines.push(
      "",
      HEADER,
      "",
      "| date | commit | machine | command | server | msg size | idle RSS MiB | max RSS under load MiB | RSS after MiB | msgs/s | client CPU µs/msg | load avg |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      row,
      "",
    );
  } else {
    let end = at + 1;
    while (end < lines.length && !lines[end]!.startsWith("|")) end++;
    while (end < lines.length && lines[end]!.startsWith("|")) end++;
    lines.splice(end, 0, row);
  }
  writeFileSync(path, lines.join("\n"));
}
