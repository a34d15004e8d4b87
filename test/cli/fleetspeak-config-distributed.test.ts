// fleetspeak-config on a configurator config with a `distributed` section: the example of deploy/
// gives the HAProxy config of deploy/ and warns about the ports it leaves open; mistakes stop it
// with one line before it writes anything. (test/docs/scaling-docs.test.ts starts what it writes.)
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { equals } from "@bufbuild/protobuf";
import { loadConfiguratorConfig } from "../../src/cli/configurator.js";
import { parseText, printText } from "../../src/common/textproto/index.js";
import { type Config, ConfigSchema } from "../../src/gen/fleetspeak_config/config_pb.js";
import { serverConfigRegistry } from "../../src/server/config.js";
import { docBlock } from "../support/doc-blocks.js";

const ROOT = resolve(import.meta.dirname, "../..");
const EXAMPLE = join(ROOT, "deploy/examples/distributed.config");

function runConfig(path: string) {
  const r = spawnSync(process.execPath, [join(ROOT, "bin/fleetspeak-config.js"), "--config", path], { encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("fleetspeak-config with a distributed section", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "fs-config-distributed-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** The example with its files moved into dir/<name>. */
  function example(name: string): Config {
    const cfg = loadConfiguratorConfig(EXAMPLE);
    const base = join(dir, name);
    cfg.trustedCertFile = join(base, "ca.pem");
    cfg.trustedCertKeyFile = join(base, "ca-key.pem");
    cfg.serverCertFile = join(base, "server.pem");
    cfg.serverCertKeyFile = join(base, "server-key.pem");
    cfg.distributed!.outputDirectory = join(base, "distributed");
    return cfg;
  }
  function write(name: string, cfg: Config): string {
    const path = join(dir, `${name}.config`);
    writeFileSync(path, printText(ConfigSchema, cfg, { registry: serverConfigRegistry }));
    return path;
  }
  function refuses(name: string, change: (cfg: Config) => void, message: RegExp): void {
    const cfg = example(name);
    change(cfg);
    const r = runConfig(write(name, cfg));
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, message);
    assert.equal(existsSync(cfg.trustedCertFile), false, "nothing is written");
  }

  it("is the configurator config that docs/scaling.md shows", () => {
    const shown = parseText(ConfigSchema, docBlock("scaling.md", "fleetspeak.config.Config: distributed"), {
      registry: serverConfigRegistry,
    });
    assert.ok(equals(ConfigSchema, shown, loadConfiguratorConfig(EXAMPLE)), "docs/scaling.md and deploy/examples/distributed.config differ");
  });

  it("writes the HAProxy config of deploy/haproxy/haproxy.cfg from the example", () => {
    const cfg = example("example");
    const r = runConfig(write("example", cfg));
    assert.equal(r.code, 0, r.stderr);
    const written = readFileSync(join(cfg.distributed!.outputDirectory, "load-balancer/haproxy.cfg"), "utf8");
    assert.equal(written, readFileSync(join(ROOT, "deploy/haproxy/haproxy.cfg"), "utf8"));
  });

  it("warns, once per role, that the example's admin and notification ports accept anyone", () => {
    const r = runConfig(write("warnings", example("warnings")));
    assert.equal(r.code, 0, r.stderr);
    const warnings = r.stderr.trimEnd().split("\n");
    assert.deepEqual(
      warnings.map((w) => w.replace(/:.*/, "")),
      ["fleetspeak-config", "fleetspeak-config"],
      r.stderr,
    );
    assert.match(r.stderr, /warning: admin servers: admin_config: anyone who can reach 0\.0\.0\.0:4444 can send messages to every client/);
    assert.match(r.stderr, /warning: frontends: notification_listen_address: anyone who can reach 0\.0\.0\.0:10000/);
  });

  it("needs the shared database", () => {
    refuses("nodb", (c) => {
      c.componentsConfig!.mysqlDataSourceName = "";
    }, /components_config\.mysql_data_source_name is not set; every server of a distributed deployment shares one MySQL database/);
  });

  it("refuses a health check HAProxy could not reach", () => {
    refuses("loopback", (c) => {
      c.componentsConfig!.healthCheckConfig!.listenAddress = "127.0.0.1:8080";
    }, /health_check_config\.listen_address "127\.0\.0\.1:8080" listens on this machine only, so HAProxy's health check cannot reach frontend-1; listen on "0\.0\.0\.0:8080" or set listen_ip of frontend-1/);
  });

  it("needs the frontends' notification listener", () => {
    refuses("nonotify", (c) => {
      c.componentsConfig!.notificationListenAddress = "";
    }, /components_config\.notification_listen_address is not set; the frontends listen there/);
  });

  it("needs a frontend and an admin server, each named once", () => {
    refuses("noadmin", (c) => {
      c.distributed!.adminServer = [];
    }, /distributed needs at least one frontend \{ name host \} and one admin_server \{ name host \}/);
    refuses("twice", (c) => {
      c.distributed!.adminServer[1]!.name = "frontend-1";
    }, /distributed: machine name "frontend-1" is used twice/);
    refuses("badip", (c) => {
      c.distributed!.frontend[0]!.listenIp = "eth0";
    }, /distributed: listen_ip "eth0" of machine "frontend-1" is not an IP address/);
  });
});
