// `npm start` (scripts/local-deploy.ts) as a user runs it: it becomes ready, fleetspeak-admin lists
// its client and delivers a message to it, and Ctrl-C stops everything with exit code 0. So does
// a SIGINT or SIGTERM sent to npm's own PID (a service manager or `kill` does that, not a
// terminal): npm passes it to the script, which runs without a shell in between.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, it } from "node:test";
import { manage } from "../support/processes.js";

const ROOT = resolve(import.meta.dirname, "../..");

function run(command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  // The printed commands start with "node bin/..."; run them as printed, from the repository root.
  const [, ...args] = command.match(/"[^"]*"|\S+/g)!.map((a) => a.replace(/^"(.*)"$/, "$1"));
  return new Promise((done) => {
    const p = execFile(process.execPath, args, { cwd: ROOT, timeout: 60_000 }, (_err, stdout, stderr) =>
      done({ code: p.exitCode ?? -1, stdout, stderr }),
    );
  });
}

function portOpen(address: string): Promise<boolean> {
  const [host, port] = address.split(":");
  return new Promise((done) => {
    const s = connect(Number(port), host!, () => {
      s.destroy();
      done(true);
    });
    s.on("error", () => done(false));
  });
}

/** Every process below `pid`, from /proc. */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The parent PID is the 2nd field after the ")" that ends the command name.
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // The process ended while we looked.
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("npm start", () => {
  const stateDir = mkdtempSync(join(tmpdir(), "fs-local-"));
  after(() => rmSync(stateDir, { recursive: true, force: true }));

  it("starts a server and a client, answers fleetspeak-admin, and stops on SIGINT", async () => {
    const proc = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "scripts/local-deploy.ts",
        "--state_dir",
        stateDir,
        "--frontend_port",
        "0",
        "--admin_port",
        "0",
        "--metrics_port",
        "0",
      ],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
    );
    const deploy = manage("local-deploy", proc);
    await deploy.waitFor(/Fleetspeak is ready\. Press Ctrl-C to stop\./, 90_000);
    const out = deploy.output();
    const listCommand = out.match(/^ {2}(node \S+fleetspeak-admin\.js --admin_addr \S+ listclients)$/m)?.[1];
    const sendCommand = out.match(/^ {2}(node \S+fleetspeak-admin\.js --admin_addr \S+ send \S+ hello Greeting --data_text "hello, client")$/m)?.[1];
    assert.ok(listCommand && sendCommand, out);
    const adminAddr = listCommand.match(/--admin_addr (\S+)/)![1]!;
    const clientId = out.match(/^ {2}client {7}([0-9a-f]{16})/m)![1]!;
    const metricsUrl = out.match(/http:\/\/\S+\/metrics/)![0];

    const list = await run(listCommand);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`^${clientId}\\s+\\S+Z \\(\\d+s ago\\)\\s+127\\.0\\.0\\.1:\\d+\\s+local\\s`, "m"));

    const sent = await run(sendCommand);
    assert.equal(sent.code, 0, sent.stderr);
    const messageId = sent.stdout.match(/sent message ([0-9a-f]{64})/)![1]!;
    const statusCommand = listCommand.replace(/listclients$/, `status ${messageId}`);
    const deadline = Date.now() + 30_000;
    for (;;) {
      const status = await run(statusCommand);
      assert.equal(status.code, 0, status.stderr);
      if (status.stdout.includes(": processed")) break;
      assert.ok(Date.now() < deadline, `message not acknowledged by the client: ${status.stdout}`);
      await new Promise((r) => setTimeout(r, 300));
    }

    const metrics = await (await fetch(metricsUrl)).text();
    assert.match(metrics, /^fleetspeak_frontend_connected_clients 1$/m);

    const code = await deploy.stop("SIGINT", 30_000);
    assert.equal(code, 0, deploy.output());
    assert.match(deploy.output(), /SIGINT: stopping the client and the server\.\.\.\nstopped\.\n/);
    assert.equal(await portOpen(adminAddr), false, "the server is gone");
  });

  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    it(`stops the server and the client when npm's own PID gets ${signal}`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "fs-local-npm-"));
      try {
        const proc = spawn(
          "npm",
          ["start", "--", "--state_dir", dir, "--frontend_port", "0", "--admin_port", "0", "--metrics_port", "0"],
          { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
        );
        const npm = manage("npm start", proc);
        await npm.waitFor(/Fleetspeak is ready\. Press Ctrl-C to stop\./, 90_000);
        const below = descendants(npm.pid);
        assert.ok(below.length >= 3, `npm start runs the script, a server and a client: ${below.join(", ")}`);
        proc.kill(signal);
        const code = await npm.exited;
        assert.equal(code, 0, npm.output());
        assert.match(npm.output(), new RegExp(`${signal}: stopping the client and the server\\.\\.\\.\\nstopped\\.\\n`));
        assert.deepEqual(below.filter(alive), [], "every process npm start ran is gone");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});
