// The peer: Mosquitto (Debian's package), a private instance per run on a free port, TLS with
// the bench CA and `require_certificate true`, so that each of its clients does what ours do
// (mutual TLS, one long-lived connection, QoS 1 delivery with an acknowledgement). Installed
// with apt-get when missing. Used side by side by the hold and push scenarios, and on its own:
//   npm run bench -- mosquitto [--clients N] [--rate R] [--seconds D]
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../test/support/haproxy.js";
import { Fleet } from "./loadgen/fleet.js";
import { benchPki, clientIdentities } from "./loadgen/identities.js";
import { measureHold, type HoldFigures } from "./loadgen/hold-measure.js";
import { MqttPublisher } from "./loadgen/mqtt.js";
import { type BenchProcess, start } from "./loadgen/processes.js";
import { appendResultRow, command, gitCommit, machine, printResult, rounded, type Summary, summarize, today } from "./loadgen/report.js";
import { nowMs, probePayload } from "./loadgen/wire.js";

const MOSQUITTO = "/usr/sbin/mosquitto";

export interface RunningMosquitto {
  port: number;
  pid: number;
  process: BenchProcess;
  stop(): Promise<void>;
}

function ensureInstalled(): void {
  if (existsSync(MOSQUITTO)) return;
  console.error("bench: installing Debian's mosquitto package (apt-get install -y mosquitto)");
  execFileSync("apt-get", ["install", "-y", "--no-install-recommends", "mosquitto"], {
    stdio: "inherit",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  if (!existsSync(MOSQUITTO)) throw new Error(`apt-get install mosquitto did not provide ${MOSQUITTO}`);
}

export async function startMosquitto(): Promise<RunningMosquitto> {
  ensureInstalled();
  const pki = benchPki();
  const dir = mkdtempSync(join(tmpdir(), "fs-bench-mosquitto-"));
  writeFileSync(join(dir, "ca.pem"), pki.caCertPem);
  writeFileSync(join(dir, "server.pem"), pki.chainPem);
  writeFileSync(join(dir, "server.key"), pki.serverKeyPem);
  const port = await freePort();
  writeFileSync(
    join(dir, "mosquitto.conf"),
    [
      // Stay root so that the files in this private directory stay readable.
      "user root",
      "persistence false",
      "allow_anonymous true",
      "log_dest stderr",
      "log_type error",
      "log_type warning",
      "max_queued_messages 1000",
      `listener ${port} 127.0.0.1`,
      `cafile ${join(dir, "ca.pem")}`,
      `certfile ${join(dir, "server.pem")}`,
      `keyfile ${join(dir, "server.key")}`,
      "require_certificate true",
      "",
    ].join("\n"),
  );
  const proc = start("mosquitto", MOSQUITTO, ["-c", join(dir, "mosquitto.conf")]);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline || proc.proc.exitCode !== null) {
      throw new Error(`mosquitto did not listen on ${port}; output:\n${proc.output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, pid: proc.pid, process: proc, stop: () => proc.stop(5000) };
}

export interface MqttPushFigures {
  clients: number;
  rate: number;
  sent: number;
  received: number;
  duplicates: number;
  latencyMs: Summary;
}

/** C subscribers; one publisher sends `rate` QoS 1 messages per second for `seconds`. */
export async function mosquittoPush(opts: {
  broker: RunningMosquitto;
  clients: number;
  rate: number;
  seconds: number;
  firstIndex?: number;
  log?: (s: string) => void;
}): Promise<MqttPushFigures> {
  const pki = benchPki();
  const first = opts.firstIndex ?? 0;
  const fleet = await Fleet.start({
    clients: opts.clients,
    target: { host: "127.0.0.1", port: opts.broker.port, servername: "localhost", caPem: pki.caCertPem, services: [] },
    mode: "mqtt",
    rampPerSec: 2000,
    maxSeconds: opts.seconds + 300,
    firstIndex: first,
  });
  try {
    const up = await fleet.until((t) => t.open === opts.clients, 120_000);
    if (up.open < opts.clients) throw new Error(`only ${up.open}/${opts.clients} MQTT clients subscribed: ${JSON.stringify(up.errors)}`);
    const ids = clientIdentities(first, first + opts.clients);
    const publisherId = clientIdentities(first + opts.clients, first + opts.clients + 1)[0]!;
    const pub = new MqttPublisher({
      host: "127.0.0.1",
      port: opts.broker.port,
      caPem: pki.caCertPem,
      keyPem: publisherId.keyPem,
      certPem: publisherId.caSignedCertPem,
      clientId: `publisher-${publisherId.id}`,
    });
    await pub.ready();
    fleet.takeLatencies();
    const count = Math.round(opts.rate * opts.seconds);
    const started = nowMs();
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const due = Math.min(count, Math.floor(((nowMs() - started) / 1000) * opts.rate));
        while (pub.sent < due) {
          const seq = pub.sent;
          pub.publish(`c/${ids[seq % ids.length]!.id}`, probePayload(nowMs(), seq));
        }
        if (pub.sent >= count) {
          clearInterval(tick);
          resolve();
        }
      }, 2);
    });
    const done = await fleet.until((t) => t.received >= count, 30_000);
    pub.close();
    const latencies = fleet.takeLatencies();
    opts.log?.(`mosquitto push: ${done.received}/${count} received`);
    return {
      clients: opts.clients,
      rate: opts.rate,
      sent: count,
      received: done.received,
      duplicates: done.duplicates,
      latencyMs: rounded(summarize(latencies)),
    };
  } finally {
    await fleet.stop();
  }
}

export async function mosquittoHold(opts: {
  broker: RunningMosquitto;
  clients: number;
  rampPerSec: number;
  settleMs: number;
  idleSeconds: number;
  log: (s: string) => void;
}): Promise<HoldFigures> {
  const pki = benchPki();
  return measureHold({
    pid: opts.broker.pid,
    label: "mosquitto",
    fleet: {
      clients: opts.clients,
      target: { host: "127.0.0.1", port: opts.broker.port, servername: "localhost", caPem: pki.caCertPem, services: [] },
      mode: "mqtt",
      rampPerSec: opts.rampPerSec,
      maxSeconds: 1800,
    },
    settleMs: opts.settleMs,
    idleSeconds: opts.idleSeconds,
    log: opts.log,
  });
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      clients: { type: "string", default: "2000" },
      rate: { type: "string", default: "500" },
      seconds: { type: "string", default: "20" },
      ramp: { type: "string", default: "1000" },
    },
    strict: true,
  });
  const clients = Number(values.clients);
  const rate = Number(values.rate);
  const seconds = Number(values.seconds);
  const log = (s: string) => console.error(`mosquitto: ${s}`);
  const broker = await startMosquitto();
  try {
    const hold = await mosquittoHold({ broker, clients, rampPerSec: Number(values.ramp), settleMs: 3000, idleSeconds: 10, log });
    const push = await mosquittoPush({ broker, clients, rate, seconds, firstIndex: clients, log });
    const result = { scenario: "mosquitto", clients, hold, push };
    printResult(result);
    appendResultRow(
      "mosquitto (peer alone)",
      "Mosquitto 2.0 (Debian) with TLS and require_certificate, C MQTT clients at QoS 1 from the same load generator.",
      ["Date", "Commit", "Machine", "Command", "Clients held", "RSS/client KiB", "Idle CPU %", "Handshakes/s", "Push p50/p99/max ms"],
      [
        today(),
        gitCommit(),
        machine(),
        `\`${command("mosquitto", args)}\``,
        String(hold.held),
        String(hold.rssPerClientKiB),
        String(hold.idleCpuPercent),
        String(hold.handshakesPerSec),
        `${push.latencyMs.p50}/${push.latencyMs.p99}/${push.latencyMs.max}`,
      ],
    );
  } finally {
    await broker.stop();
  }
}
