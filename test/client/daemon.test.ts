// The Daemon service with real Python daemons that speak the channel the way Fleetspeak's Python
// connector does (test/client/python/fs_channel.py follows its handshake): message exchange,
// restarts with back-off, protocol violations, heartbeat and memory kills, output forwarding,
// lazy start and inactivity.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { anyPack, anyUnpack, BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { type RunningClient, startClient } from "../../src/client/main.js";
import { createCa } from "../../src/common/certs.js";
import { StdOutputDataSchema } from "../../src/gen/fleetspeak_daemonservice/messages_pb.js";
import {
  KillNotification_Reason,
  KillNotificationSchema,
  ResourceUsageDataSchema,
} from "../../src/gen/fleetspeak_monitoring/resource_pb.js";
import {
  captureLogger,
  daemonServiceText,
  testDaemonArgv,
  until,
  writeClientConfig,
} from "./support/client-env.js";
import { FakeFrontend, type ReceivedMessage } from "./support/fake-frontend.js";

const ca = createCa("test");
const RESPAWN_MS = 500;
const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function run(
  serviceText: string,
): Promise<{ ff: FakeFrontend; client: RunningClient; logs: ReturnType<typeof captureLogger> }> {
  const ff = await FakeFrontend.start({ ca });
  cleanups.push(() => ff.stop());
  const files = writeClientConfig({ ca, servers: [ff.address], textServices: { "daemon.service": serviceText } });
  const logs = captureLogger();
  const client = await startClient({ configFile: files.configFile, log: logs.log, daemonRespawnDelayMs: RESPAWN_MS });
  cleanups.push(() => client.stop());
  return { ff, client, logs };
}

const isType = (t: string) => (r: ReceivedMessage) => r.message.messageType === t;
const bytesOf = (r: ReceivedMessage) => Buffer.from(anyUnpack(r.message.data!, BytesValueSchema)!.value).toString();
const terminations = (ff: FakeFrontend) =>
  ff.received
    .filter(isType("ResourceUsage"))
    .map((r) => anyUnpack(r.message.data!, ResourceUsageDataSchema)!)
    .filter((d) => d.processTerminated);

describe("Daemon service", () => {
  it("exchanges messages with a Python daemon over fds 3 and 4, with the daemon's environment", async () => {
    const { ff, client } = await run(daemonServiceText("TestService", testDaemonArgv("echo")));
    const hello = await ff.waitFor(isType("Hello"));
    const [idFromEnv] = bytesOf(hello).split(" ");
    assert.equal(idFromEnv, client.clientId, "FLEETSPEAK_CLIENT_ID");
    assert.equal(hello.message.source?.serviceName, "TestService");
    assert.equal(hello.message.sourceMessageId.length, 16);
    assert.equal(ff.received.filter((r) => r.message.messageType === "StartupData" || r.message.messageType === "Heartbeat").length, 0,
      "StartupData and heartbeats stay in the client");

    const ping = ff.send(
      client.clientId,
      "TestService",
      "Ping",
      anyPack(BytesValueSchema, create(BytesValueSchema, { value: Buffer.from("payload") })),
    );
    const reply = await ff.waitFor(isType("EchoReply"));
    assert.equal(bytesOf(reply), "payload", "the daemon got the whole server message, data included");
    await until(() => ff.ackedIds().has(Buffer.from(ping.messageId).toString("hex")), 10_000, "ack");
    assert.deepEqual(ff.violations, []);
  });

  it("sends its magic without waiting for the daemon's (a daemon may read first)", async () => {
    const { ff, client } = await run(daemonServiceText("TestService", testDaemonArgv("readfirst")));
    await ff.waitFor(isType("Hello"));
    ff.send(client.clientId, "TestService", "Ping");
    await ff.waitFor(isType("EchoReply"));
  });

  it("restarts a crashing daemon, no sooner than the respawn delay, and reports each end", async () => {
    const { ff } = await run(daemonServiceText("TestService", testDaemonArgv("crash")));
    await ff.until(() => ff.received.filter(isType("Hello")).length >= 3, 20_000, "three starts");
    const hellos = ff.received.filter(isType("Hello"));
    const pids = new Set(hellos.map((h) => bytesOf(h).split(" ")[1]));
    assert.equal(pids.size, hellos.length, "a new process every time");
    await ff.until(() => terminations(ff).length >= 2, 10_000, "process_terminated reports");
    const starts = terminations(ff).map((t) => Number(t.processStartTime!.seconds) * 1000 + t.processStartTime!.nanos / 1e6);
    for (let i = 1; i < starts.length; i++) {
      assert.ok(starts[i]! - starts[i - 1]! >= RESPAWN_MS - 5, `starts ${starts[i]! - starts[i - 1]!} ms apart`);
    }
  });

  for (const mode of ["garbage", "oversize", "badmagic"]) {
    it(`tears down and restarts a daemon that writes ${mode}; the client keeps working`, async () => {
      const { ff, logs } = await run(daemonServiceText("TestService", testDaemonArgv(mode)));
      await ff.until(() => terminations(ff).length >= 2, 20_000, "two ends of the broken daemon");
      assert.match(terminations(ff)[0]!.debugStatus, /channel error/, "the server learns why");
      assert.ok(logs.text().includes("broke the channel protocol"));
      const before = ff.contacts.length;
      await ff.until(() => ff.contacts.length > before, 10_000, "client still talking to the server");
    });
  }

  it("kills a daemon that stops sending heartbeats, telling the server first", async () => {
    const { ff } = await run(
      daemonServiceText(
        "TestService",
        testDaemonArgv("silent"),
        "    monitor_heartbeats: true\n    heartbeat_unresponsive_grace_period_seconds: 1\n    heartbeat_unresponsive_kill_period_seconds: 1",
      ),
    );
    const kill = await ff.waitFor(isType("KillNotification"), 20_000);
    const kn = anyUnpack(kill.message.data!, KillNotificationSchema)!;
    assert.equal(kn.reason, KillNotification_Reason.HEARTBEAT_FAILURE);
    assert.equal(kn.service, "TestService");
    assert.equal(kn.version, "test-daemon-1.0");
    assert.equal(kill.message.source?.serviceName, "TestService");
    assert.equal(kill.message.destination?.serviceName, "system");
    assert.equal(kill.message.priority, 1, "LOW");
  });

  it("kills a daemon over its memory limit, telling the server first", async () => {
    const { ff } = await run(
      daemonServiceText(
        "TestService",
        testDaemonArgv("memhog", "300"),
        "    memory_limit: 104857600\n    resource_monitoring_sample_period_seconds: 1",
      ),
    );
    const kill = await ff.waitFor(isType("KillNotification"), 30_000);
    assert.equal(anyUnpack(kill.message.data!, KillNotificationSchema)!.reason, KillNotification_Reason.MEMORY_EXCEEDED);
  });

  it("sends resource-usage reports on the doubling schedule", async () => {
    const { ff } = await run(
      daemonServiceText(
        "TestService",
        testDaemonArgv("echo"),
        "    resource_monitoring_sample_size: 2\n    resource_monitoring_sample_period_seconds: 1",
      ),
    );
    const report = await ff.waitFor(
      (r) => isType("ResourceUsage")(r) && !anyUnpack(r.message.data!, ResourceUsageDataSchema)!.processTerminated,
      15_000,
    );
    const data = anyUnpack(report.message.data!, ResourceUsageDataSchema)!;
    assert.equal(data.scope, "TestService");
    assert.ok(data.resourceUsage!.maxResidentMemory > 1_000_000n);
    assert.ok(data.resourceUsage!.maxNumFds >= 3);
    assert.match(data.debugStatus, /VmRSS/);
  });

  it("forwards stdout and stderr as StdOutput when std_params is set", async () => {
    const { ff } = await run(
      daemonServiceText(
        "TestService",
        testDaemonArgv("stdout"),
        '    std_params { service_name: "Logs" flush_time_seconds: 1 }',
      ),
    );
    await ff.until(
      () => {
        const all = ff.received
          .filter(isType("StdOutput"))
          .map((r) => anyUnpack(r.message.data!, StdOutputDataSchema)!);
        const out = all.map((d) => Buffer.from(d.stdout).toString()).join("");
        const err = all.map((d) => Buffer.from(d.stderr).toString()).join("");
        return out.includes("hello on stdout") && err.includes("hello on stderr");
      },
      15_000,
      "StdOutput with both streams",
    );
    const first = ff.received.find(isType("StdOutput"))!;
    assert.equal(first.message.destination?.serviceName, "Logs");
    assert.equal(anyUnpack(first.message.data!, StdOutputDataSchema)!.messageIndex, 0n);
  });

  it("starts a lazy daemon on the first message and stops it after inactivity, measured from its start", async () => {
    const { ff, client, logs } = await run(
      daemonServiceText(
        "TestService",
        testDaemonArgv("quietecho"),
        "    inactivity_timeout { seconds: 3 }\n    disable_resource_monitoring: true",
      ),
    );
    await ff.waitFor(isType("ClientInfo"));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(ff.received.filter(isType("Hello")).length, 0, "not started before a message arrives");
    ff.send(client.clientId, "TestService", "Ping");
    await ff.waitFor(isType("EchoReply"));
    await until(() => logs.lines.some((l) => l.reason === "inactivity timeout"), 15_000, "inactivity teardown");
    const started = logs.lines.find((l) => l.msg === "daemon started")!.time as number;
    const stopped = logs.lines.find((l) => l.reason === "inactivity timeout")!.time as number;
    assert.ok(stopped - started >= 3000, `torn down ${stopped - started} ms after start (Fleetspeak's epoch quirk: at once)`);
    ff.send(client.clientId, "TestService", "Ping");
    await ff.until(() => ff.received.filter(isType("EchoReply")).length === 2, 15_000, "lazy restart on the next message");
  });

  it("closes the channel on client stop and the daemon exits on its own", async () => {
    const { ff, client, logs } = await run(daemonServiceText("TestService", testDaemonArgv("echo")));
    await ff.waitFor(isType("Hello"));
    await client.stop();
    const exited = logs.lines.find((l) => l.msg === "daemon exited");
    assert.ok(exited, "daemon exited");
    assert.equal(exited.code, 0, "orderly exit after EOF, no signal needed");
  });
});
