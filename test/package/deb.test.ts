// The Debian packages (`npm run package:deb`), installed on this machine with dpkg as an operator
// would: the server configured by the packaged fleetspeak-config as the `fleetspeak` user and
// started with its systemd unit's ExecStart line (this machine runs no systemd) as the unit's
// User; the packaged client (the single executable) started with its unit's command line and a
// Daemon service in /etc/fleetspeak-client/textservices/; a message from the packaged
// fleetspeak-admin reaches the daemon and its answer reaches the Processor (GRR's place). Both
// packages are purged at the end. The configuration steps are docs/install.md's own commands
// (sudo -u becomes runuser -u), and the paths that page names are where it says. Needs root (as CI runs), and a machine where neither package
// nor a Fleetspeak client's state file is there already.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { anyUnpack, StringValueSchema } from "@bufbuild/protobuf/wkt";
import { daemonServiceText, REPO, tempDir, testDaemonArgv, until } from "../client/support/client-env.js";
import { docBlocks } from "../support/doc-blocks.js";
import { freePort } from "../support/haproxy.js";
import { type ManagedProcess, manage } from "../support/processes.js";
import { startProcessor, type TestProcessor } from "../support/processor-server.js";

const PACKAGES = ["fleetspeak-server", "fleetspeak-client"];
const CLIENT_STATE = "/var/lib/misc/fleetspeak-client.state";
/** What systemd would give the units: no environment of ours. */
const UNIT_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LANG: "C.UTF-8" };

function installed(pkg: string): boolean {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
  const r = spawnSync("dpkg-query", ["-W", "-f=${db:Status-Abbrev}", pkg], { encoding: "utf8" });
  return r.status === 0 && r.stdout.startsWith("ii");
}

/** dpkg, waiting (up to 5 minutes) while another installation holds its lock. */
async function dpkg(...args: string[]): Promise<string> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const r = spawnSync("dpkg", args, { encoding: "utf8", env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
    if (r.status === 0) return r.stdout + r.stderr;
    if (!/lock/i.test(r.stderr) || Date.now() > deadline) throw new Error(`dpkg ${args.join(" ")}: ${r.stderr}`);
    await new Promise((res) => setTimeout(res, 2_000));
  }
}

/** The [Service] settings of a unit file: ExecStart's words and User. */
function unit(name: string): { execStart: string[]; user: string } {
  const text = readFileSync(`/lib/systemd/system/${name}.service`, "utf8");
  const value = (key: string) => text.match(new RegExp(`^${key}=(.*)$`, "m"))?.[1] ?? "";
  return { execStart: value("ExecStart").split(/\s+/), user: value("User") };
}

/**
 * Runs the command of docs/install.md (a line of a command block, with its continuation lines)
 * that contains `text`, as root: `sudo -u USER` becomes `runuser -u USER --`.
 */
function installDocCommand(text: string, cwd = "/"): string {
  const commands = docBlocks("install.md").flatMap((b) => b.text.replace(/\\\n\s*/g, "").split("\n"));
  const command = commands.find((c) => c.includes(text));
  assert.ok(command, `docs/install.md has no command with ${text}`);
  const script = command.replace(/\s+# .*$/, "").replace(/sudo -u (\S+) /g, "runuser -u $1 -- ").replace(/\bsudo /g, "");
  return execFileSync("sh", ["-ec", script], { cwd, env: UNIT_ENV, encoding: "utf8" });
}

function asUnit(name: string): ManagedProcess {
  const { execStart, user } = unit(name);
  const proc = spawn("runuser", ["-u", user, "--", ...execStart], { cwd: "/", env: UNIT_ENV, stdio: ["ignore", "pipe", "pipe"] });
  return manage(name, proc);
}

describe("the Debian packages", { timeout: 600_000 }, () => {
  const out = tempDir("fs-deb-");
  let userExisted = true;
  let processor: TestProcessor;
  let server: ManagedProcess | undefined;
  let client: ManagedProcess | undefined;
  let ports: { frontend: number; admin: number; health: number; stats: number };

  before(async () => {
    assert.equal(process.getuid?.(), 0, "installing packages needs root (CI runs as root)");
    for (const pkg of PACKAGES) {
      assert.ok(!installed(pkg), `${pkg} is installed on this machine already; this test installs and purges it: dpkg --purge ${pkg}`);
    }
    assert.ok(!existsSync(CLIENT_STATE), `${CLIENT_STATE} exists: a Fleetspeak client runs here; this test would take its identity`);
    userExisted = spawnSync("getent", ["passwd", "fleetspeak"]).status === 0;
    execFileSync(process.execPath, [join(REPO, "scripts/package-deb.mjs"), "--out", out, "--compression", "gzip"], { stdio: ["ignore", "ignore", "inherit"] });
    processor = await startProcessor();
    ports = { frontend: await freePort(), admin: await freePort(), health: await freePort(), stats: await freePort() };
  });

  after(async () => {
    await client?.stop();
    await server?.stop();
    await processor?.close();
    for (const pkg of PACKAGES) if (installed(pkg)) await dpkg("--purge", pkg);
    // What the test made there beside the packages' own files: certificates, configs, database.
    rmSync("/etc/fleetspeak-server", { recursive: true, force: true });
    rmSync("/etc/fleetspeak-client", { recursive: true, force: true });
    rmSync("/var/lib/fleetspeak-server", { recursive: true, force: true });
    if (!userExisted) spawnSync("userdel", ["fleetspeak"]);
    rmSync(out, { recursive: true, force: true });
  });

  it("builds fleetspeak-server and fleetspeak-client .deb files of the package's version", () => {
    const { version } = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as { version: string };
    for (const pkg of PACKAGES) {
      const fields = execFileSync("dpkg-deb", ["-f", join(out, `${pkg}_${version}_amd64.deb`), "Package", "Version", "Architecture"], {
        encoding: "utf8",
      });
      assert.equal(fields, `Package: ${pkg}\nVersion: ${version}\nArchitecture: amd64\n`);
    }
  });

  it("installs both with dpkg: binaries, units, the fleetspeak user, conffiles, the state directory", async () => {
    const debs = PACKAGES.map((p) => execFileSync("sh", ["-c", `ls ${out}/${p}_*_amd64.deb`], { encoding: "utf8" }).trim());
    await dpkg("-i", ...debs);
    for (const bin of ["fleetspeak-server", "fleetspeak-config", "fleetspeak-admin", "fleetspeak-client"]) {
      assert.ok(statSync(`/usr/bin/${bin}`).mode & 0o111, `/usr/bin/${bin} is executable`);
    }
    assert.equal(unit("fleetspeak-server").user, "fleetspeak");
    assert.equal(unit("fleetspeak-client").user, "root");
    assert.equal(spawnSync("getent", ["passwd", "fleetspeak"]).status, 0, "the fleetspeak user");
    const owner = execFileSync("stat", ["-c", "%U %a", "/etc/fleetspeak-server", "/var/lib/fleetspeak-server"], { encoding: "utf8" });
    assert.equal(owner, "fleetspeak 750\nfleetspeak 750\n");
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax
    const conffiles = execFileSync("dpkg-query", ["-W", "-f=${Conffiles}", "fleetspeak-server"], { encoding: "utf8" });
    assert.match(conffiles, /\/etc\/fleetspeak-server\/configurator\.config [0-9a-f]{32}/);
    assert.ok(statSync("/etc/fleetspeak-client/textservices").isDirectory());
    // The client is the single executable: nothing of Node.js installed beside it.
    const files = execFileSync("dpkg", ["-L", "fleetspeak-client"], { encoding: "utf8" });
    assert.ok(!/node_modules|\.js$/m.test(files), files);
  });

  it("runs: configured by fleetspeak-config, the server started by its unit's command line, the client connected, a message there and back", async () => {
    const cfg = "/etc/fleetspeak-server/configurator.config";
    const edited = readFileSync(cfg, "utf8")
      .replace(/^\s*mysql_data_source_name:.*\n/m, "")
      .replace('"0.0.0.0:4443"', `"127.0.0.1:${ports.frontend}"`)
      .replace('"127.0.0.1:6061"', `"127.0.0.1:${ports.admin}"`)
      .replace('"127.0.0.1:8080"', `"127.0.0.1:${ports.health}"`)
      .replace('"127.0.0.1:9100"', `"127.0.0.1:${ports.stats}"`)
      .replace('"fleetspeak.example.com:4443"', `"localhost:${ports.frontend}"`);
    writeFileSync(cfg, edited);
    const services = "/etc/fleetspeak-server/server.services.config";
    writeFileSync(services, readFileSync(services, "utf8").replace('"localhost:11111"', `"${processor.address}"`));
    installDocCommand("fleetspeak-config --config /etc/fleetspeak-server/configurator.config");
    assert.match(installDocCommand("--check"), /frontend/i);

    server = asUnit("fleetspeak-server");
    await server.waitFor(/Fleetspeak server started/, 60_000);
    assert.ok(existsSync("/var/lib/fleetspeak-server/fleetspeak.sqlite"), "the SQLite database in /var/lib/fleetspeak-server");

    installDocCommand("cp linux_client.config /etc/fleetspeak-client/client.config", "/etc/fleetspeak-server");
    // The daemon answers the server service "GRR", as GRR's agent does.
    const [env, ...argv] = testDaemonArgv("echo");
    writeFileSync(
      "/etc/fleetspeak-client/textservices/echo.service",
      daemonServiceText("EchoDaemon", [env!, "TEST_DAEMON_SERVER_SERVICE=GRR", ...argv]),
    );
    client = asUnit("fleetspeak-client");
    await until(() => processor.processed.some((m) => m.messageType === "Hello"), 60_000, "the daemon's Hello");
    assert.ok(existsSync(CLIENT_STATE), `the client keeps its identity in ${CLIENT_STATE}, as install.md says`);
    const clientId = Buffer.from(processor.processed.find((m) => m.messageType === "Hello")!.source!.clientId).toString("hex");

    const admin = (...args: string[]) =>
      execFileSync("fleetspeak-admin", ["--admin_addr", `127.0.0.1:${ports.admin}`, ...args], { env: UNIT_ENV, encoding: "utf8" });
    assert.match(admin("listclients"), new RegExp(clientId));
    admin("send", clientId, "EchoDaemon", "Ping", "--data_text", "through the packages", "--source", "GRR");
    await until(
      () =>
        processor.processed.some(
          (m) => m.messageType === "EchoReply" && m.data && anyUnpack(m.data, StringValueSchema)?.value === "through the packages",
        ),
      30_000,
      "the daemon's echo at the Processor",
    );
  });

  it("purges both: binaries, units and the client's identity gone", async () => {
    await client?.stop();
    await server?.stop();
    await dpkg("--purge", ...PACKAGES);
    for (const path of ["/usr/bin/fleetspeak-server", "/usr/bin/fleetspeak-client", "/usr/lib/fleetspeak-server", "/lib/systemd/system/fleetspeak-server.service", CLIENT_STATE]) {
      assert.ok(!existsSync(path), `${path} is gone`);
    }
  });
});
