// The config blocks in docs/ are real configs: each block whose first line names a message type
// ("# fleetspeak.components.Config: …") must parse as that message and pass the server's checks.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
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
import { docBlocks } from "../support/doc-blocks.js";

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

describe("config blocks in docs/", () => {
  const blocks = configBlocks();

  it("finds the blocks of the scaling guide", () => {
    const inScaling = blocks.filter((b) => b.file === "scaling.md").map((b) => b.type);
    assert.deepEqual(inScaling.sort(), ["fleetspeak.client.generic.Config", "fleetspeak.config.Config"]);
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
        case "fleetspeak.config.Config":
          // A configurator config; scaling-docs.test.ts runs fleetspeak-config on it.
          parseText(ConfiguratorConfigSchema, b.text, { fileName: where, registry: serverConfigRegistry });
          return;
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
