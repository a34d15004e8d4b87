// The config blocks in docs/ are real configs: each block whose first line names a message type
// ("# fleetspeak.components.Config: …") must parse as that message and pass the server's checks.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { ConfigSchema as ClientConfigSchema } from "../../src/gen/fleetspeak_client_generic/config_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";
import { serviceConfigRegistry } from "../../src/client/config.js";
import { clientFactories } from "../../src/client/main.js";
import { parseText } from "../../src/common/textproto/index.js";
import { ClientServiceConfigSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { CommunicatorConfigSchema } from "../../src/gen/fleetspeak_client/client_pb.js";
import { checkComponentsConfig, checkServicesConfig, serverConfigRegistry } from "../../src/server/config.js";

const ROOT = resolve(import.meta.dirname, "../..");
const DOCS = join(ROOT, "docs");

interface Block {
  file: string;
  line: number;
  type: string;
  text: string;
}

function configBlocks(): Block[] {
  const out: Block[] = [];
  for (const name of readdirSync(DOCS).filter((n) => n.endsWith(".md"))) {
    const lines = readFileSync(join(DOCS, name), "utf8").split("\n");
    for (let i = 0; i < lines.length; i++) {
      if (!lines[i]!.startsWith("```")) continue;
      const start = i + 1;
      let end = start;
      while (end < lines.length && !lines[end]!.startsWith("```")) end++;
      const m = /^# (fleetspeak\.[\w.]+)/.exec(lines[start] ?? "");
      if (m) out.push({ file: name, line: start + 1, type: m[1]!, text: lines.slice(start, end).join("\n") });
      i = end;
    }
  }
  return out;
}

/** The fenced block of docs/`file` whose first line starts with `firstLine`. */
function fencedBlock(file: string, firstLine: string): string {
  const lines = readFileSync(join(DOCS, file), "utf8").split("\n");
  const start = lines.findIndex((l, i) => l.startsWith(firstLine) && lines[i - 1]?.startsWith("```"));
  assert.ok(start > 0, `docs/${file} has no block starting with ${firstLine}`);
  const end = lines.findIndex((l, i) => i > start && l.startsWith("```"));
  return lines.slice(start, end).join("\n");
}

describe("config blocks in docs/", () => {
  const blocks = configBlocks();

  it("finds the blocks of the scaling guide", () => {
    const inScaling = blocks.filter((b) => b.file === "scaling.md").map((b) => b.type);
    assert.deepEqual(inScaling.sort(), [
      "fleetspeak.client.generic.Config",
      "fleetspeak.components.Config",
      "fleetspeak.components.Config",
      "fleetspeak.components.Config",
      "fleetspeak.server.ServerConfig",
    ]);
  });

  for (const b of blocks) {
    it(`${b.file}:${b.line} parses as ${b.type} and passes the checks`, () => {
      const where = `docs/${b.file}`;
      switch (b.type) {
        case "fleetspeak.components.Config": {
          const cfg = parseText(ComponentsConfigSchema, b.text, { fileName: where });
          checkComponentsConfig(cfg, where, "/tmp/unused.sqlite");
          return;
        }
        case "fleetspeak.server.ServerConfig":
          checkServicesConfig(parseText(ServerConfigSchema, b.text, { fileName: where, registry: serverConfigRegistry }), where);
          return;
        case "fleetspeak.client.generic.Config": {
          const cfg = parseText(ClientConfigSchema, b.text, { fileName: where });
          assert.ok(cfg.server.length > 0 && cfg.persistenceHandler.case === "filesystemHandler");
          return;
        }
        case "fleetspeak.client.CommunicatorConfig":
          parseText(CommunicatorConfigSchema, b.text, { fileName: where });
          return;
        case "fleetspeak.ClientServiceConfig": {
          const cfg = parseText(ClientServiceConfigSchema, b.text, { fileName: where, registry: serviceConfigRegistry });
          const factory = clientFactories.get(cfg.factory);
          assert.ok(factory, `${where}:${b.line}: unknown factory ${cfg.factory}`);
          factory(cfg, { daemonRespawnDelayMs: 60_000, stdForward: false });
          return;
        }
        default:
          assert.fail(`${where}:${b.line}: no check for config type ${b.type}; add one to this test`);
      }
    });
  }

  it("scaling.md's Galera settings are options mariadbd knows, taking the values written", () => {
    const block = fencedBlock("scaling.md", "# /etc/mysql/mariadb.conf.d/60-galera.cnf");
    const dir = mkdtempSync(join(tmpdir(), "fs-docs-galera-"));
    try {
      const cnf = join(dir, "galera.cnf");
      writeFileSync(cnf, block);
      // --help reads the file like a start would, and lists every option with its value.
      const run = spawnSync("/usr/sbin/mariadbd", [`--defaults-file=${cnf}`, "--verbose", "--help"], { encoding: "utf8" });
      const out = `${run.stdout}${run.stderr}`;
      assert.doesNotMatch(out, /unknown (variable|option)/);
      for (const [, name, value] of block.matchAll(/^(\w+)\s*=\s*(\S+)$/gm)) {
        const option = name!.replace(/_/g, "-");
        // Booleans are listed as TRUE/FALSE.
        const shown = value === "ON" ? "(ON|TRUE)" : value!.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
        assert.match(out, new RegExp(`^${option}\\s+${shown}$`, "m"), `${name} = ${value}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("scaling.md's HAProxy section for Galera is a valid HAProxy config", () => {
    const block = fencedBlock("scaling.md", "# haproxy.cfg: in front of the Galera cluster");
    const dir = mkdtempSync(join(tmpdir(), "fs-docs-haproxy-"));
    try {
      const cfg = join(dir, "haproxy.cfg");
      // The example's host names do not resolve here.
      writeFileSync(cfg, `global\n  maxconn 100\ndefaults\n  default-server init-addr last,libc,none\n${block}\n`);
      execFileSync("/usr/sbin/haproxy", ["-c", "-q", "-f", cfg]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("deploy/haproxy/haproxy.cfg is a valid HAProxy config", () => {
    execFileSync("/usr/sbin/haproxy", ["-c", "-q", "-f", join(ROOT, "deploy/haproxy/haproxy.cfg")]);
  });

  it("the deploy/ example configs pass fleetspeak-server --check", () => {
    for (const comp of ["frontend.components.config", "admin.components.config"]) {
      const out = execFileSync(
        process.execPath,
        [
          join(ROOT, "bin/fleetspeak-server.js"),
          "--components_config",
          join(ROOT, "deploy/examples", comp),
          "--services_config",
          join(ROOT, "deploy/examples/server.services.config"),
          "--check",
        ],
        { encoding: "utf8" },
      );
      assert.match(out, /^config OK: /);
    }
  });
});
