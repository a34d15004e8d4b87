// Fleetspeak's own config files through the text format: the documented examples parse as
// written, mistakes are reported at file:line:column with what was expected, and every config
// prints back into text that parses to the same message.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createRegistry, type DescMessage, equals, type MessageShape } from "@bufbuild/protobuf";
import { anyUnpack, durationMs } from "@bufbuild/protobuf/wkt";
import { parseText, printText, TextFormatError } from "../../src/common/textproto/index.js";
import { ClientServiceConfigSchema } from "../../src/gen/fleetspeak/system_pb.js";
import { CommunicatorConfigSchema } from "../../src/gen/fleetspeak_client/client_pb.js";
import { ConfigSchema as GenericClientConfigSchema } from "../../src/gen/fleetspeak_client_generic/config_pb.js";
import { CompressionAlgorithm } from "../../src/gen/fleetspeak/common_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import {
  ConfigSchema as DaemonConfigSchema,
  file_fleetspeak_daemonservice_config,
} from "../../src/gen/fleetspeak_daemonservice/config_pb.js";
import {
  ConfigSchema as GrpcConfigSchema,
  file_fleetspeak_grpcservice_grpcservice,
} from "../../src/gen/fleetspeak_grpcservice/grpcservice_pb.js";
import { ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";

const registry = createRegistry(file_fleetspeak_grpcservice_grpcservice, file_fleetspeak_daemonservice_config);

const CERT = "-----BEGIN CERTIFICATE-----\\nMIIBfTCCASOgAwIBAgIRAJ1c\\n-----END CERTIFICATE-----\\n";
const KEY = "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIO2x\\n-----END EC PRIVATE KEY-----\\n";
const DSN = "fleetspeak:secret@tcp(127.0.0.1:3306)/fleetspeak";

function throwsAt(fn: () => unknown, where: string, gist: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TextFormatError, String(e));
    assert.equal(`${e.fileName}:${e.line}:${e.column}`, where, e.message);
    assert.ok(e.reason.includes(gist), `${e.message}\n  does not include: ${gist}`);
    return true;
  });
}

function roundTrip<D extends DescMessage>(schema: D, message: MessageShape<D>): string {
  const text = printText(schema, message, { registry });
  const back = parseText(schema, text, { registry, fileName: "printed" });
  assert.ok(equals(schema, back, message), `round trip changed the message:\n${text}`);
  return text;
}

// From "Scaling a fleetspeak setup", with the [...] blanks filled in. The closing ">" lines are
// missing from that page's rendering; the config cannot parse without them (see the test below).
const frontendComponents = `mysql_data_source_name: "${DSN}"
https_config: <
  listen_address: "0.0.0.0:4443"
  certificates: "${CERT}"
  key: "${KEY}"
>
notification_listen_address: "10.0.0.5:12000"
notification_public_address: "fs-frontend-1.internal:12000"
proxy_protocol: true
`;

const adminComponents = `mysql_data_source_name: "${DSN}"
admin_config: <
  listen_address: "0.0.0.0:4444"
>
notification_use_http_notifier: true
`;

const grrServices = `services {
  name: "GRR"
  factory: "GRPC"
  config {
    [type.googleapis.com/fleetspeak.grpcservice.Config] {
      target: "localhost:11111"
      insecure: true
    }
  }
}
broadcast_poll_time {
  seconds: 1
}
`;

const daemonService = `# /etc/fleetspeak-client/textservices/hello.textproto
name: "hello"
factory: "Daemon"
config: {
  [type.googleapis.com/fleetspeak.daemonservice.Config]: {
    argv: "/usr/bin/python3"
    argv: "-m" argv: "hello_service"
    monitor_heartbeats: true
    heartbeat_unresponsive_grace_period { seconds: 600 }
    heartbeat_unresponsive_kill_period: { seconds: 300 }
    resource_monitoring_sample_period < seconds: 30 >
    inactivity_timeout { seconds: 3600 nanos: 500000000 }
    memory_limit: 2147483648
    std_params { service_name: "hello" flush_bytes: 1024 }
  }
}
required_labels: { service_name: "client" label: "linux" }
required_labels { service_name: "client" label: "corp" }
`;

const genericClient = `trusted_certs: "${CERT}"
  "${CERT}"
server: "fleetspeak.example.com:4443"
server: "10.0.0.5:4443"
client_label: "linux"
filesystem_handler < configuration_directory: "/etc/x" state_file: "/var/x" >
streaming: true
`;

const communicator = `# written by a newer client
max_poll_delay_seconds: 60
max_buffer_delay_seconds: 1
compression: COMPRESSION_DEFLATE
future_knob: -5
future_block {
  nested < deeper: [1, 2] >
  label: "x"
}
future_list: ["a" "b", 'c']
prefer_http2: true
`;

describe("Fleetspeak configs in text format", () => {
  it("reads the frontend components example from the scaling guide", () => {
    const c = parseText(ComponentsConfigSchema, frontendComponents, { fileName: "server.components.config" });
    assert.equal(c.mysqlDataSourceName, DSN);
    assert.equal(c.httpsConfig?.listenAddress, "0.0.0.0:4443");
    assert.equal(c.httpsConfig?.certificates, CERT.replaceAll("\\n", "\n"));
    assert.ok(c.httpsConfig?.key.startsWith("-----BEGIN EC PRIVATE KEY-----\nMHcC"));
    assert.equal(c.notificationListenAddress, "10.0.0.5:12000");
    assert.equal(c.notificationPublicAddress, "fs-frontend-1.internal:12000");
    assert.equal(c.proxyProtocol, true);
    assert.equal(c.adminConfig, undefined);
    roundTrip(ComponentsConfigSchema, c);
  });

  it("reads the admin components example from the scaling guide", () => {
    const c = parseText(ComponentsConfigSchema, adminComponents);
    assert.equal(c.adminConfig?.listenAddress, "0.0.0.0:4444");
    assert.equal(c.notificationUseHttpNotifier, true);
    assert.equal(c.httpsConfig, undefined);
    assert.equal(
      roundTrip(ComponentsConfigSchema, c),
      `mysql_data_source_name: "${DSN}"\nadmin_config {\n  listen_address: "0.0.0.0:4444"\n}\nnotification_use_http_notifier: true\n`,
    );
  });

  it("says what is missing when the guide's example is copied without its closing >", () => {
    const truncated = frontendComponents.replace(">\n", "");
    throwsAt(
      () => parseText(ComponentsConfigSchema, truncated, { fileName: "server.components.config" }),
      "server.components.config:6:1",
      'unknown field "notification_listen_address" in fleetspeak.components.HttpsConfig; expected one of: listen_address, certificates, key, disable_streaming, frontend_config, enable_file_server_authorization, limits; "notification_listen_address" is a field of fleetspeak.components.Config: is a ">" missing to close "https_config" (opened at 2:15)?',
    );
    throwsAt(
      () => parseText(ComponentsConfigSchema, adminComponents.replace(">\n", ""), { fileName: "server.components.config" }),
      "server.components.config:4:1",
      'is a ">" missing to close "admin_config" (opened at 2:15)?',
    );
    throwsAt(
      () => parseText(ComponentsConfigSchema, 'admin_config <\n  listen_address: ""\n', { fileName: "server.components.config" }),
      "server.components.config:3:1",
      'reached end of input inside "admin_config" opened at 1:14; expected ">" to close it',
    );
  });

  it("reads the GRR services config with its expanded Any", () => {
    const s = parseText(ServerConfigSchema, grrServices, { registry, fileName: "server.services.config" });
    assert.equal(s.services.length, 1);
    const svc = s.services[0]!;
    assert.equal(svc.name, "GRR");
    assert.equal(svc.factory, "GRPC");
    assert.equal(svc.config?.typeUrl, "type.googleapis.com/fleetspeak.grpcservice.Config");
    const grpc = anyUnpack(svc.config!, GrpcConfigSchema)!;
    assert.equal(grpc.target, "localhost:11111");
    assert.equal(grpc.insecure, true);
    assert.equal(s.broadcastPollTime?.seconds, 1n);
    assert.equal(roundTrip(ServerConfigSchema, s), grrServices);
  });

  it("reads a daemonservice text service file", () => {
    const c = parseText(ClientServiceConfigSchema, daemonService, { registry, fileName: "hello.textproto" });
    assert.equal(c.name, "hello");
    assert.equal(c.factory, "Daemon");
    const d = anyUnpack(c.config!, DaemonConfigSchema)!;
    assert.deepEqual(d.argv, ["/usr/bin/python3", "-m", "hello_service"]);
    assert.equal(d.monitorHeartbeats, true);
    assert.equal(durationMs(d.heartbeatUnresponsiveGracePeriod!), 600_000);
    assert.equal(durationMs(d.heartbeatUnresponsiveKillPeriod!), 300_000);
    assert.equal(durationMs(d.resourceMonitoringSamplePeriod!), 30_000);
    assert.equal(durationMs(d.inactivityTimeout!), 3_600_500);
    assert.equal(d.memoryLimit, 2147483648n);
    assert.equal(d.stdParams?.serviceName, "hello");
    assert.equal(d.stdParams?.flushBytes, 1024);
    assert.deepEqual(
      c.requiredLabels.map((l) => `${l.serviceName}:${l.label}`),
      ["client:linux", "client:corp"],
    );
    const text = roundTrip(ClientServiceConfigSchema, c);
    assert.ok(text.includes('config {\n  [type.googleapis.com/fleetspeak.daemonservice.Config] {\n    argv: "/usr/bin/python3"\n    argv: "-m"\n'));
  });

  it("reads a generic client config with < > blocks and concatenated PEM strings", () => {
    const c = parseText(GenericClientConfigSchema, genericClient, { fileName: "linux_client.config" });
    assert.equal(c.trustedCerts, CERT.replaceAll("\\n", "\n").repeat(2));
    assert.deepEqual(c.server, ["fleetspeak.example.com:4443", "10.0.0.5:4443"]);
    assert.deepEqual(c.clientLabel, ["linux"]);
    assert.equal(c.persistenceHandler.case, "filesystemHandler");
    assert.equal(c.persistenceHandler.value?.configurationDirectory, "/etc/x");
    assert.equal(c.persistenceHandler.value?.stateFile, "/var/x");
    assert.equal(c.streaming, true);
    roundTrip(GenericClientConfigSchema, c);
  });

  it("reads communicator.txt from a newer client, skipping unknown fields in discardUnknown mode", () => {
    const c = parseText(CommunicatorConfigSchema, communicator, { discardUnknown: true, fileName: "communicator.txt" });
    assert.equal(c.maxPollDelaySeconds, 60);
    assert.equal(c.maxBufferDelaySeconds, 1);
    assert.equal(c.compression, CompressionAlgorithm.COMPRESSION_DEFLATE);
    assert.equal(c.preferHttp2, true);
    roundTrip(CommunicatorConfigSchema, c);
    throwsAt(
      () => parseText(CommunicatorConfigSchema, communicator, { fileName: "communicator.txt" }),
      "communicator.txt:5:1",
      'unknown field "future_knob" in fleetspeak.client.CommunicatorConfig; expected one of: max_poll_delay_seconds',
    );
  });
});

describe("mistakes in Fleetspeak configs", () => {
  const parseComponents = (text: string) => parseText(ComponentsConfigSchema, text, { fileName: "components.config" });

  it("unknown field", () => {
    throwsAt(
      () => parseComponents(`mysql_data_source_name: "${DSN}"\nhttps_config {\n  listn_address: "0.0.0.0:4443"\n}\n`),
      "components.config:3:3",
      'unknown field "listn_address" in fleetspeak.components.HttpsConfig; expected one of: listen_address, certificates, key, disable_streaming, frontend_config, enable_file_server_authorization, limits (did you mean "listen_address"?)',
    );
  });

  it("value of the wrong type", () => {
    throwsAt(
      () => parseComponents('https_config {\n  listen_address: "0.0.0.0:4443"\n  certificates: <\n'),
      "components.config:3:17",
      'expected a string after "certificates:", got "<"',
    );
    throwsAt(() => parseComponents("proxy_protocol: yes"), "components.config:1:17", 'expected true or false after "proxy_protocol:", got "yes"');
    throwsAt(
      () => parseComponents('admin_config: "0.0.0.0:4444"'),
      "components.config:1:15",
      'expected "{" or "<" to start fleetspeak.components.AdminConfig after "admin_config:", got the string "0.0.0.0:4444"',
    );
  });

  it("unterminated string", () => {
    throwsAt(
      () => parseComponents(`mysql_data_source_name: "${DSN}\nhttps_config {}\n`),
      "components.config:1:25",
      'unterminated string; expected a closing " on the same line',
    );
  });

  it("bad escape", () => {
    throwsAt(
      () => parseComponents('https_config {\n  key: "-----BEGIN EC PRIVATE KEY-----\\q"\n}'),
      "components.config:2:39",
      "unknown escape sequence \\q in string",
    );
  });

  it("missing }", () => {
    throwsAt(
      () => parseComponents('https_config {\n  listen_address: "0.0.0.0:4443"\n  frontend_config {\n    mtls_config {}\n}\n'),
      "components.config:6:1",
      'reached end of input inside "https_config" opened at 1:14; expected "}" to close it',
    );
  });

  it("integer out of range", () => {
    throwsAt(
      () => parseText(ServerConfigSchema, 'services {\n  name: "x"\n  max_parallelism: 4294967296\n}', { fileName: "services.config" }),
      "services.config:3:20",
      '4294967296 is out of range for uint32 field "max_parallelism"; expected 0 to 4294967295',
    );
    throwsAt(
      () => parseText(CommunicatorConfigSchema, "max_poll_delay_seconds: -2147483649", { fileName: "communicator.txt" }),
      "communicator.txt:1:25",
      "out of range for int32",
    );
  });

  it("unknown enum name", () => {
    throwsAt(
      () => parseText(CommunicatorConfigSchema, "compression: GZIP", { fileName: "communicator.txt" }),
      "communicator.txt:1:14",
      'unknown value "GZIP" for enum fleetspeak.CompressionAlgorithm in field "compression"; expected one of: COMPRESSION_NONE, COMPRESSION_DEFLATE',
    );
  });

  it("oneof set twice", () => {
    throwsAt(
      () =>
        parseComponents(
          'https_config {\n  frontend_config {\n    mtls_config {}\n    https_header_config { client_certificate_header: "ssl-client-cert" }\n  }\n}',
        ),
      "components.config:4:5",
      'field "https_header_config" and field "mtls_config" (at 3:5) are both in oneof "frontend_mode" of fleetspeak.components.FrontendConfig; set only one of them',
    );
    throwsAt(
      () => parseText(GenericClientConfigSchema, 'filesystem_handler {}\nregistry_handler { configuration_key: "HKLM" }', { fileName: "c" }),
      "c:2:1",
      'are both in oneof "persistence_handler"',
    );
  });

  it("non-repeated field set twice", () => {
    throwsAt(
      () => parseComponents('admin_config { listen_address: "a:1" }\nadmin_config < listen_address: "b:1" >'),
      "components.config:2:1",
      'field "admin_config" of fleetspeak.components.Config is set twice (first at 1:1)',
    );
    throwsAt(
      () => parseComponents('https_config {\n  listen_address: "a:1"\n  listen_address: "b:1"\n}'),
      "components.config:3:3",
      'field "listen_address" of fleetspeak.components.HttpsConfig is set twice (first at 2:3); it is not repeated, so write it once',
    );
  });

  it("unknown Any type", () => {
    throwsAt(
      () => parseText(ServerConfigSchema, grrServices.replace("grpcservice.Config", "grpcservice.Konfig"), { registry, fileName: "services.config" }),
      "services.config:5:5",
      'cannot resolve the Any type URL "type.googleapis.com/fleetspeak.grpcservice.Konfig": the registry does not know fleetspeak.grpcservice.Konfig; add its schema or file to the registry',
    );
    throwsAt(
      () => parseText(ServerConfigSchema, grrServices, { fileName: "services.config" }),
      "services.config:5:5",
      "no registry was given",
    );
  });

  it("errors inside an expanded Any point into the Any body", () => {
    throwsAt(
      () => parseText(ClientServiceConfigSchema, daemonService.replace("monitor_heartbeats: true", "monitor_heartbeat: true"), { registry, fileName: "hello.textproto" }),
      "hello.textproto:8:5",
      'unknown field "monitor_heartbeat" in fleetspeak.daemonservice.Config; expected one of: argv, inactivity_timeout',
    );
  });
});
