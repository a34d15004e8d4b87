// The config blocks in docs/ are real configs: each block whose first line names a message type
// ("# fleetspeak.components.Config: …") must parse as that message and pass the server's checks.
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { ConfigSchema as ClientConfigSchema } from "../../src/gen/fleetspeak_client_generic/config_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { ConfigSchema as ConfiguratorConfigSchema } from "../../src/gen/fleetspeak_config/config_pb.js";
import { ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";
import { serviceConfigRegistry } from "../../src/client/config.js";
import { clientFactories } from "../../src/client/main.js";
import { parseText } from "../../src/common/textproto/index.js";
import { ClientServiceConfigSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { CommunicatorConfigSchema } from "../../src/gen/fleetspeak_client/client_pb.js";
import { checkComponentsConfig, checkServicesConfig, serverConfigRegistry } from "../../src/server/config.js";
import { docBlock, docBlocks } from "../support/doc-blocks.js";
import { testServerPki } from "../support/tls.js";

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
  for (const file of readdirSync(DOCS).filter((n) => n.endsWith(".md"))) {
    for (const b of docBlocks(file)) {
      const m = /^(fleetspeak\.[\w.]+)/.exec(b.title);
      if (m) out.push({ file, line: b.line, type: m[1]!, text: b.text });
    }
  }
  return out;
}

/**
 * A block with what the page tells the reader to fill in filled in: the PEM placeholders
 * ("-----BEGIN CERTIFICATE-----\n...\n") get a real certificate and key, and the files a
 * services config names (/etc/…) get real ones of their kind in a temporary folder.
 */
function filledIn(text: string, files: string): string {
  const pki = testServerPki();
  const pem = (s: string) => JSON.stringify(s);
  return text
    .replaceAll('"-----BEGIN CERTIFICATE-----\\n...\\n-----END CERTIFICATE-----\\n"', pem(pki.certChainPem))
    .replaceAll('"-----BEGIN EC PRIVATE KEY-----\\n...\\n-----END EC PRIVATE KEY-----\\n"', pem(pki.keyPem))
    .replace(/(\w+): "(\/etc\/[^"]+)"/g, (_, field: string, path: string) => {
      const content = { cert_file: pki.ca.certPem, client_certificate_file: pki.server.certPem, client_key_file: pki.server.keyPem }[field];
      assert.ok(content, `no test file for ${field}: ${path}; add one to filledIn`);
      const copy = join(files, path.replaceAll("/", "_"));
      writeFileSync(copy, content);
      return `${field}: ${JSON.stringify(copy)}`;
    });
}

describe("config blocks in docs/", () => {
  const blocks = configBlocks();
  let files: string;
  before(() => {
    files = mkdtempSync(join(tmpdir(), "fs-docs-configs-"));
  });
  after(() => rmSync(files, { recursive: true, force: true }));

  it("finds the blocks of the scaling guide", () => {
    const inScaling = blocks.filter((b) => b.file === "scaling.md").map((b) => b.type);
    assert.deepEqual(inScaling.sort(), [
      "fleetspeak.client.generic.Config",
      "fleetspeak.components.Config",
      "fleetspeak.components.Config",
      "fleetspeak.components.Config",
      "fleetspeak.config.Config",
    ]);
  });

  for (const b of blocks) {
    it(`${b.file}:${b.line} parses as ${b.type} and passes the checks`, () => {
      const where = `docs/${b.file}`;
      switch (b.type) {
        case "fleetspeak.components.Config": {
          const cfg = parseText(ComponentsConfigSchema, filledIn(b.text, files), { fileName: where });
          checkComponentsConfig(cfg, where, "/tmp/unused.sqlite");
          return;
        }
        case "fleetspeak.config.Config":
          // A configurator config; scaling-docs.test.ts runs fleetspeak-config on it.
          parseText(ConfiguratorConfigSchema, b.text, { fileName: where, registry: serverConfigRegistry });
          return;
        case "fleetspeak.server.ServerConfig":
          checkServicesConfig(parseText(ServerConfigSchema, filledIn(b.text, files), { fileName: where, registry: serverConfigRegistry }), where);
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
    const block = docBlock("scaling.md", "/etc/mysql/mariadb.conf.d/60-galera.cnf (node db-1)");
    const cnf = join(files, "galera.cnf");
    writeFileSync(cnf, block);
    // --help reads the file as a start would, and lists every option with its value.
    const run = spawnSync("/usr/sbin/mariadbd", [`--defaults-file=${cnf}`, "--verbose", "--help"], { encoding: "utf8" });
    const out = `${run.stdout}${run.stderr}`;
    assert.doesNotMatch(out, /unknown (variable|option)/);
    for (const [, name, value] of block.matchAll(/^(\w+)\s*=\s*(\S+)$/gm)) {
      const option = name!.replace(/_/g, "-");
      // Booleans are listed as TRUE/FALSE.
      const shown = value === "ON" ? "(ON|TRUE)" : value!.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
      assert.match(out, new RegExp(`^${option}\\s+${shown}$`, "m"), `${name} = ${value}`);
    }
  });

  it("scaling.md's HAProxy section for Galera is a valid HAProxy config", () => {
    const block = docBlock("scaling.md", "haproxy.cfg: in front of the Galera cluster, on each server machine");
    const cfg = join(files, "haproxy-galera.cfg");
    // The example's host names do not resolve here.
    writeFileSync(cfg, `global\n  maxconn 100\ndefaults\n  default-server init-addr last,libc,none\n${block}\n`);
    execFileSync("/usr/sbin/haproxy", ["-c", "-q", "-f", cfg]);
  });

  it("the deploy/ example configs pass fleetspeak-server --check, certificates filled in", () => {
    for (const comp of ["frontend.components.config", "admin.components.config"]) {
      const copy = join(files, comp);
      const text = readFileSync(join(ROOT, "deploy/examples", comp), "utf8");
      const pki = testServerPki();
      writeFileSync(
        copy,
        text
          .replace(/certificates: "[^"]*PASTE[^"]*"/, `certificates: ${JSON.stringify(pki.certChainPem)}`)
          .replace(/key: "[^"]*PASTE[^"]*"/, `key: ${JSON.stringify(pki.keyPem)}`),
      );
      const out = execFileSync(
        process.execPath,
        [
          join(ROOT, "bin/fleetspeak-server.js"),
          "--components_config",
          copy,
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
