import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import {
  ConfigError,
  goArch,
  goOs,
  loadClientConfig,
  readCommunicatorConfig,
  readServiceConfigs,
} from "../../src/client/config.js";
import { createCa } from "../../src/common/certs.js";
import { createLogger } from "../../src/common/log.js";
import { ClientServiceConfigSchema, SignedClientServiceConfigSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { ConfigSchema as DaemonConfigSchema } from "../../src/gen/fleetspeak_daemonservice/config_pb.js";
import { tempDir } from "./support/client-env.js";

const log = createLogger("test");
const ca = createCa("test");

function setup(configText: (dir: string) => string): { dir: string; file: string } {
  const dir = tempDir();
  mkdirSync(join(dir, "etc"));
  mkdirSync(join(dir, "var"));
  const file = join(dir, "client.config");
  writeFileSync(file, configText(dir));
  return { dir, file };
}

describe("client config", () => {
  it("maps Node's platform names to Go's GOARCH and GOOS", () => {
    assert.equal(goArch("x64"), "amd64");
    assert.equal(goArch("arm64"), "arm64");
    assert.equal(goArch("ia32"), "386");
    assert.equal(goOs("linux"), "linux");
    assert.equal(goOs("win32"), "windows");
    assert.equal(goOs("darwin"), "darwin");
  });

  it("reads a config as fleetspeak-config writes it, with <> delimiters and comments", () => {
    const { dir, file } = setup(
      (d) => `# generated
trusted_certs: ${JSON.stringify(ca.certPem)}
server: "fs1.example.com:4443"
server: "fs2.example.com:4443"
client_label: "grr-prod"
client_label: "  "
client_label: ""
filesystem_handler <
  configuration_directory: "${d}/etc"
  state_file: "${d}/var/fleetspeak-client.state"
>
streaming: true
server_name: "fleetspeak.example.com"
`,
    );
    const cfg = loadClientConfig(file);
    assert.deepEqual(cfg.servers, ["fs1.example.com:4443", "fs2.example.com:4443"]);
    assert.deepEqual(
      cfg.labels.map((l) => [l.serviceName, l.label]),
      [
        ["client", goArch()],
        ["client", goOs()],
        ["client", "grr-prod"],
      ],
    );
    assert.equal(cfg.configurationDirectory, `${dir}/etc`);
    assert.equal(cfg.stateFile, `${dir}/var/fleetspeak-client.state`);
    assert.equal(cfg.streaming, true);
    assert.equal(cfg.serverName, "fleetspeak.example.com");
  });

  it("refuses unknown fields in the main config, naming file, line and column", () => {
    const { file } = setup(
      (d) => `trusted_certs: ${JSON.stringify(ca.certPem)}
server: "a:1"
filesystem_handler { configuration_directory: "${d}/etc" }
streeming: true
`,
    );
    assert.throws(() => loadClientConfig(file), (e: Error) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, new RegExp(`${file}:4:1`));
      assert.match(e.message, /streeming/);
      return true;
    });
  });

  it("explains what is missing", () => {
    const cases: Array<[string, RegExp]> = [
      [`server: "a:1"`, /unable to parse trusted_certs/],
      [`trusted_certs: ${JSON.stringify(ca.certPem)}`, /no server provided/],
      [`trusted_certs: ${JSON.stringify(ca.certPem)} server: "a:1"`, /persistence_handler is required/],
      [
        `trusted_certs: ${JSON.stringify(ca.certPem)} server: "a:1" filesystem_handler { configuration_directory: "/nonexistent/dir" }`,
        /configuration_directory \/nonexistent\/dir is not an existing directory/,
      ],
      [
        `trusted_certs: ${JSON.stringify(ca.certPem)} server: "a:1" registry_handler { configuration_key: "HKLM" }`,
        /registry_handler is for Windows/,
      ],
    ];
    for (const [text, re] of cases) {
      const { file } = setup(() => text);
      assert.throws(() => loadClientConfig(file), re);
    }
  });

  it("reads communicator.txt leniently: unknown fields skipped, garbage means defaults", () => {
    const dir = tempDir();
    assert.equal(readCommunicatorConfig(dir, log).minFailureDelaySeconds, 0, "missing file = defaults");
    writeFileSync(
      join(dir, "communicator.txt"),
      "# shipped by the deb package\nmax_poll_delay_seconds: 7\nsome_future_field: 3\ncompression: COMPRESSION_DEFLATE\nprefer_http2: true\n",
    );
    const c = readCommunicatorConfig(dir, log);
    assert.equal(c.maxPollDelaySeconds, 7);
    assert.equal(c.compression, 1);
    assert.equal(c.preferHttp2, true);
    writeFileSync(join(dir, "communicator.txt"), "max_poll_delay_seconds: {{{");
    assert.equal(readCommunicatorConfig(dir, log).maxPollDelaySeconds, 0);
  });

  it("reads GRR's Linux service config from textservices/ and signed configs from services/", () => {
    const dir = tempDir();
    mkdirSync(join(dir, "textservices"));
    mkdirSync(join(dir, "services"));
    // grr/core/install_data/fleetspeak/linux/grr_service_config.txt.in, as GRR's builder fills it in.
    writeFileSync(
      join(dir, "textservices", "grr_service_config.txt"),
      `name: "GRR"
factory: "Daemon"
required_labels {
  service_name: "client"
  label: "linux"
}
config {
  [type.googleapis.com/fleetspeak.daemonservice.Config] {
    argv: "/usr/sbin/grrd"
    argv: "--config=/usr/lib/grr/grr_3.4.7.1_amd64/grrd.yaml"

    monitor_heartbeats: true
    heartbeat_unresponsive_grace_period_seconds: 600  # 10 minutes.
    heartbeat_unresponsive_kill_period_seconds: 120  # 2 minutes.
  }
}
`,
    );
    writeFileSync(join(dir, "textservices", "broken.txt"), "name: {");
    const inner = create(ClientServiceConfigSchema, {
      name: "Signed",
      factory: "NOOP",
    });
    writeFileSync(
      join(dir, "services", "signed"),
      toBinary(
        SignedClientServiceConfigSchema,
        create(SignedClientServiceConfigSchema, {
          serviceConfig: toBinary(ClientServiceConfigSchema, inner),
          signature: Buffer.from("sig"),
        }),
      ),
    );
    writeFileSync(join(dir, "services", "garbage"), Buffer.from([0xff, 0xff, 0xff]));
    const found = readServiceConfigs(dir, log);
    assert.deepEqual(
      found.map((f) => f.config.name),
      ["Signed", "GRR"],
      "signed configs first, broken files skipped",
    );
    assert.equal(Buffer.from(found[0]!.signature).toString(), "sig");
    const grr = found[1]!.config;
    assert.equal(grr.factory, "Daemon");
    assert.deepEqual(
      grr.requiredLabels.map((l) => `${l.serviceName}:${l.label}`),
      ["client:linux"],
    );
    const ds = anyUnpack(grr.config!, DaemonConfigSchema)!;
    assert.deepEqual(ds.argv, ["/usr/sbin/grrd", "--config=/usr/lib/grr/grr_3.4.7.1_amd64/grrd.yaml"]);
    assert.equal(ds.monitorHeartbeats, true);
    assert.equal(ds.heartbeatUnresponsiveGracePeriodSeconds, 600);
    assert.equal(ds.heartbeatUnresponsiveKillPeriodSeconds, 120);
  });
});
