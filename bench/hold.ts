// hold: how many idle streaming clients one frontend process holds, and what each costs it.
//   npm run bench -- hold [--clients 20000] [--ramp 1000] [--peer mosquitto|none] [...]
// One fleetspeak-server process (frontend + admin, SQLite in a temp dir); load processes open N
// streaming connections (mTLS, the real wire protocol), ramping at --ramp per second. Reports
// server RSS per client, CPU while every client is connected and idle, handshakes per second
// during the ramp, and the highest N held without errors; then, with every client still
// connected, messages per second delivered when --deliver messages are inserted at once. The same
// number of MQTT/TLS clients is then held by Mosquitto for the ratios.
import { kill } from "node:process";
import { existsSync, mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Admin } from "../src/gen/fleetspeak_server/admin_pb.js";
import type { Fleet } from "./loadgen/fleet.js";
import { type HoldFigures, measureHold } from "./loadgen/hold-measure.js";
import { benchPki, clientIdentities } from "./loadgen/identities.js";
import { insertAtRate, leanAdmin } from "./loadgen/inserter.js";
import { heapGroups, mainThreadProfile, newestFile, selfTimeByModule, topFunctions } from "./loadgen/profile.js";
import { rssBytes } from "./loadgen/processes.js";
import { appendResultRow, command, gitCommit, machine, mib, printResult, rounded, summarize, today } from "./loadgen/report.js";
import { noopServices, readMetrics, startBenchServer } from "./loadgen/servers.js";
import { mosquittoHold, startMosquitto } from "./mosquitto.js";

/** Issue 8's goal: 20,000 clients at ≤ 64 KiB each; Fleetspeak (Go) measured ~65 KiB per client. */
const GOAL_KIB = 64;
const FLEETSPEAK_KIB = 65;

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      // RLIMIT_NOFILE is 20,000 (hard) here: a process cannot hold 20,000 client sockets and
      // still accept its admin and metrics connections.
      clients: { type: "string", default: "19900" },
      workers: { type: "string" },
      "server-workers": { type: "string" },
      ramp: { type: "string", default: "1000" },
      "max-connecting": { type: "string", default: "400" },
      settle: { type: "string", default: "5" },
      idle: { type: "string", default: "10" },
      deliver: { type: "string" },
      // With every client connected: InsertMessage at this rate to random clients for push-seconds,
      // each message's latency from the call to the client's receipt (0: skip).
      "push-rate": { type: "string", default: "100" },
      "push-seconds": { type: "string", default: "30" },
      peer: { type: "string", default: "mosquitto" },
      "frontend-only": { type: "boolean", default: false },
      "cpu-prof": { type: "boolean", default: false },
      "heap-snapshot": { type: "boolean", default: false },
      "node-flags": { type: "string", default: "" },
    },
    strict: true,
  });
  const clients = Number(values.clients);
  const withAdmin = !values["frontend-only"];
  const deliver = withAdmin ? Number(values.deliver ?? Math.min(clients, 5000)) : 0;
  const log = (s: string) => console.error(`hold: ${s}`);
  if (values.peer !== "mosquitto" && values.peer !== "none") throw new Error("--peer is mosquitto or none");

  const pki = benchPki();
  const t0 = Date.now();
  const ids = clientIdentities(0, clients);
  log(`${clients} client identities ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const dir = mkdtempSync(join(tmpdir(), "fs-bench-hold-"));
  const nodeFlags: string[] = [];
  if (values["cpu-prof"]) nodeFlags.push("--cpu-prof", `--cpu-prof-dir=${dir}`);
  if (values["heap-snapshot"]) nodeFlags.push("--heapsnapshot-signal=SIGUSR2");
  // --node-flags "--max-semi-space-size=2 …": Node/V8 flags for the server (its workers inherit them).
  nodeFlags.push(...values["node-flags"]!.split(/\s+/).filter(Boolean));
  const server = await startBenchServer({
    name: "frontend",
    frontend: {},
    admin: withAdmin,
    services: noopServices(),
    nodeFlags,
    dir,
    logLevel: "warn",
    ...(values["server-workers"] ? { workers: Number(values["server-workers"]) } : {}),
  });
  let ours: HoldFigures;
  let delivery: Record<string, unknown> | undefined;
  let heap: Record<string, number> = {};
  let heapTop: ReturnType<typeof heapGroups> | undefined;
  let push: Awaited<ReturnType<typeof pushPhase>> | undefined;
  const pushRate = withAdmin ? Number(values["push-rate"]) : 0;
  const pushSeconds = Number(values["push-seconds"]);
  try {
    await new Promise((r) => setTimeout(r, 2000));
    ours = await measureHold({
      pid: server.pid,
      label: "fleetspeak",
      fleet: {
        clients,
        ...(values.workers ? { workers: Number(values.workers) } : {}),
        target: { host: "127.0.0.1", port: server.frontendPort!, servername: "localhost", caPem: pki.caCertPem, services: ["TestService"] },
        mode: "stream",
        rampPerSec: Number(values.ramp),
        maxConnecting: Number(values["max-connecting"]),
        maxSeconds: 1800,
      },
      settleMs: Number(values.settle) * 1000,
      idleSeconds: Number(values.idle),
      log,
      whileHeld: async (fleet) => {
        heap = await readMetrics(server.metricsAddress, [
          "nodejs_heap_size_used_bytes",
          "nodejs_heap_size_total_bytes",
          "nodejs_external_memory_bytes",
          "process_resident_memory_bytes",
        ]);
        if (values["heap-snapshot"]) heapTop = await snapshot(server.pid, dir, log);
        if (pushRate > 0) push = await pushPhase(fleet, server.adminAddress!, ids.map((c) => c.id), pushRate, pushSeconds, log);
        if (deliver > 0) delivery = await deliveryPhase(fleet, server.adminAddress!, ids.slice(0, Math.min(deliver, clients)).map((c) => c.id), deliver, log);
      },
    });
  } finally {
    await server.stop();
  }
  let profile: ReturnType<typeof topFunctions> | undefined;
  let idleProfile: ReturnType<typeof topFunctions> | undefined;
  const prof = values["cpu-prof"] ? mainThreadProfile(dir) : undefined;
  if (prof) {
    profile = topFunctions(prof, 25);
    log(`CPU profile ${prof}, whole run:`);
    for (const f of profile.top) log(`  ${f.percent}% ${f.selfMs} ms ${f.fn} ${f.where}`);
    const ramp = topFunctions(prof, 25, ours.rampWindow);
    log(`CPU profile while connecting (${ramp.totalMs} ms):`);
    for (const m of selfTimeByModule(prof, 20, ours.rampWindow)) log(`  ${m.percent}% ${m.selfMs} ms ${m.module}`);
    for (const f of ramp.top) log(`  ${f.percent}% ${f.selfMs} ms ${f.fn} ${f.where}`);
    idleProfile = topFunctions(prof, 25, ours.idleWindow);
    log(`CPU profile while idle (${idleProfile.totalMs} ms):`);
    for (const f of idleProfile.top) log(`  ${f.percent}% ${f.selfMs} ms ${f.fn} ${f.where}`);
  }

  let peer: HoldFigures | undefined;
  if (values.peer === "mosquitto") {
    const broker = await startMosquitto();
    try {
      await new Promise((r) => setTimeout(r, 1000));
      peer = await mosquittoHold({
        broker,
        clients,
        rampPerSec: Number(values.ramp),
        settleMs: Number(values.settle) * 1000,
        idleSeconds: Number(values.idle),
        log,
      });
    } finally {
      await broker.stop();
    }
  }

  const ratio = peer ? Number((ours.rssPerClientKiB / peer.rssPerClientKiB).toFixed(2)) : undefined;
  const result = {
    scenario: "hold",
    clients,
    fleetspeak: ours,
    serverHeap: Object.fromEntries(Object.entries(heap).map(([k, v]) => [k, mib(v)])),
    push,
    delivery,
    peer,
    memoryRatioToPeer: ratio,
    goalKiB: GOAL_KIB,
    ratioToFleetspeakGo: Number((ours.rssPerClientKiB / FLEETSPEAK_KIB).toFixed(2)),
    cpuProfile: profile ? { file: prof, totalMs: profile.totalMs, top: profile.top.slice(0, 10), idleTop: idleProfile?.top.slice(0, 10) } : undefined,
    heapTop: heapTop?.groups.slice(0, 15),
  };
  printResult(result);
  appendResultRow(
    "hold (issue 4/8): idle streaming clients on one frontend process",
    `One fleetspeak-server process (frontend + admin, SQLite), N streaming clients (mTLS, real wire protocol) from load processes on the same machine. RSS/client = (RSS after − RSS before) / N. Goal: 20,000 clients at ≤ ${GOAL_KIB} KiB each; Fleetspeak (Go) ≈ ${FLEETSPEAK_KIB} KiB per client. The peer is Mosquitto with the same number of MQTT/TLS clients (require_certificate).`,
    ["Date", "Commit", "Machine", "Command", "Held (no errors)", "RSS/client KiB", "vs Go 65 KiB", "Idle CPU %", "Handshakes/s", "Delivered msgs/s", "Mosquitto RSS/client KiB", "Ours/Mosquitto", "Mosquitto idle CPU %"],
    [
      today(),
      gitCommit(),
      machine(),
      `\`${command("hold", args)}\``,
      `${ours.held} (${ours.heldWithoutErrors})`,
      String(ours.rssPerClientKiB),
      `${result.ratioToFleetspeakGo}×`,
      String(ours.idleCpuPercent),
      String(ours.handshakesPerSec),
      `${delivery ? String(delivery.deliveredPerSec) : "-"}${push ? ` (push ${push.rate}/s to all: p50 ${push.latencyMs.p50} / p99 ${push.latencyMs.p99} ms)` : ""}`,
      peer ? String(peer.rssPerClientKiB) : "-",
      ratio !== undefined ? `${ratio}×` : "-",
      peer ? String(peer.idleCpuPercent) : "-",
    ],
  );
}

/**
 * With every client connected: InsertMessage at `rate` per second for `seconds`, each to a client
 * drawn at random from all of them; the time from each call to the client's receipt.
 */
async function pushPhase(fleet: Fleet, adminAddress: string, clientIds: string[], rate: number, seconds: number, log: (s: string) => void) {
  const admins = [0, 1].map(() => leanAdmin(adminAddress));
  const count = Math.round(rate * seconds);
  const targets: Uint8Array[] = [];
  for (let i = 0; i < count; i++) targets.push(Buffer.from(clientIds[Math.floor(Math.random() * clientIds.length)]!, "hex"));
  const before = (await fleet.refresh()).received;
  fleet.takeLatencies();
  try {
    const outcome = await insertAtRate({ admins, clientIds: targets, service: "TestService", rate, count, maxInFlight: 256 });
    const got = await fleet.until((t) => t.received - before >= outcome.ok, 60_000);
    const latencyMs = rounded(summarize(fleet.takeLatencies()), 1);
    const received = got.received - before;
    log(`push at ${rate}/s for ${seconds} s: ${received}/${count} received, ${outcome.failed} failed; latency ms ${JSON.stringify(latencyMs)}`);
    return { rate, seconds, messages: count, received, insertErrors: outcome.errors, latencyMs };
  } finally {
    for (const a of admins) a.close();
  }
}

/** Inserts `count` messages as fast as the admin API takes them; measures delivery to clients. */
async function deliveryPhase(fleet: Fleet, adminAddress: string, clientIds: string[], count: number, log: (s: string) => void) {
  const admins = [0, 1, 2, 3].map(() => createClient(Admin, createGrpcTransport({ baseUrl: `http://${adminAddress}` })));
  const before = (await fleet.refresh()).received;
  fleet.takeLatencies();
  const started = Date.now();
  const inserted = insertAtRate({
    admins,
    clientIds: clientIds.map((id) => Buffer.from(id, "hex")),
    service: "TestService",
    rate: 1_000_000,
    count,
    maxInFlight: 256,
  });
  const got = await fleet.until((t) => t.received - before >= count, 180_000);
  const outcome = await inserted;
  const seconds = (Date.now() - started) / 1000;
  const received = got.received - before;
  log(`delivery: ${received}/${count} received in ${seconds.toFixed(1)} s; inserts took ${outcome.seconds.toFixed(1)} s`);
  return {
    messages: count,
    received,
    seconds: Number(seconds.toFixed(1)),
    deliveredPerSec: Math.round(received / seconds),
    insertsPerSec: Math.round(outcome.ok / outcome.seconds),
    insertErrors: outcome.errors,
    latencyMs: rounded(summarize(fleet.takeLatencies()), 0),
  };
}

/** A heap snapshot of the server (--heapsnapshot-signal=SIGUSR2), summarized by kind. */
async function snapshot(pid: number, dir: string, log: (s: string) => void): Promise<ReturnType<typeof heapGroups> | undefined> {
  const rss = rssBytes(pid);
  kill(pid, "SIGUSR2");
  // Writing takes a while; the file is complete when its size stops changing.
  let last = -1;
  for (let i = 0; i < 600; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const f = newestFile(dir, ".heapsnapshot");
    if (!f || !existsSync(f)) continue;
    const { size } = statSync(f);
    if (size === last && size > 0) {
      const groups = heapGroups(f, 30);
      log(`heap snapshot ${f} (server RSS ${mib(rss)} MiB, JS heap nodes ${mib(groups.totalBytes)} MiB):`);
      for (const g of groups.groups) log(`  ${mib(g.selfBytes)} MiB ${g.count} × ${g.kind}`);
      return groups;
    }
    last = size;
  }
  return undefined;
}
