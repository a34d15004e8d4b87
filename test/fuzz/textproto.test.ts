// Fuzzing the text-format reader with the server's two config schemas: whatever the bytes, it
// either returns a message or throws TextFormatError (file:line:column), never anything else and
// never hangs; and whatever it accepts, printing and reading again gives the same message.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, it } from "node:test";
import { type DescMessage, equals } from "@bufbuild/protobuf";
import fc from "fast-check";
import { parseText, printText, TextFormatError } from "../../src/common/textproto/index.js";
import { ConfigSchema as ClientConfigSchema } from "../../src/gen/fleetspeak_client_generic/config_pb.js";
import { ConfigSchema as ComponentsConfigSchema } from "../../src/gen/fleetspeak_components/config_pb.js";
import { ServerConfigSchema } from "../../src/gen/fleetspeak_server/server_pb.js";
import { serverConfigRegistry } from "../../src/server/config.js";
import { fuzzParams, fuzzTimeout, onlyThrows } from "./fuzz-params.js";
import { mutatedText } from "./mutate.js";

const ROOT = resolve(import.meta.dirname, "../..");

const CORPUS = [
  ...readdirSync(join(ROOT, "deploy/examples"))
    .filter((n) => n.endsWith(".config"))
    .map((n) => readFileSync(join(ROOT, "deploy/examples", n), "latin1")),
  'https_config { listen_address: ":443" certificates: "-----BEGIN\\n\\x41\\101" key: \'k\' "2" frontend_config { cleartext_xfcc_config { client_certificate_header: "x-forwarded-client-cert" } } }',
  "admin_config: < listen_address: '[::1]:9091' tls_key: \"\\u00e9\\U0001F600\" > notification_shared_secret: [\"a\", \"b\"] stats_config {}",
  "https_config { limits { max_connections: 0x10 max_pending_connections: 017 max_buffered_request_bytes: 18446744073709551615 } }",
  'services [{ name: "a" factory: "NOOP" max_parallelism: 4294967295 }, { name: "b" config { type_url: "x" value: "\\000" } }] broadcast_poll_time { seconds: -9223372036854775808 nanos: -1 }',
  "# only a comment\n",
];

const TOKENS = [
  "{", "}", "<", ">", "[", "]", ":", ";", ",", '"', "'", "\\", "\\x", "\\u", "\\U", "\\0", "\n", "#",
  "-", "0x", "0", "1e999", "inf", "-nan", "true", "t", "9223372036854775808", "18446744073709551616",
  "[type.googleapis.com/fleetspeak.grpcservice.Config]", "[type.googleapis.com/fleetspeak.components.Config]",
  "[type.googleapis.com/", "services", "config", "https_config", "limits", "admin_config {", "}}}}",
  "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
];

const SCHEMAS: Array<[string, DescMessage]> = [
  ["fleetspeak.components.Config", ComponentsConfigSchema],
  ["fleetspeak.server.ServerConfig", ServerConfigSchema],
  ["fleetspeak.client.generic.Config", ClientConfigSchema],
];

function checkOne(schema: DescMessage, text: string, discardUnknown: boolean): void {
  let parsed: ReturnType<typeof parseText> | undefined;
  onlyThrows(() => {
    parsed = parseText(schema, text, { fileName: "fuzz.config", registry: serverConfigRegistry, discardUnknown });
  }, TextFormatError);
  if (!parsed) return;
  const printed = printText(schema, parsed, { registry: serverConfigRegistry });
  const again = parseText(schema, printed, { fileName: "printed.config", registry: serverConfigRegistry });
  assert.ok(equals(schema, parsed, again), `print/parse changed the message:\n${printed}`);
}

describe("fuzz: text-format config reader", { timeout: fuzzTimeout(60_000) }, () => {
  for (const [name, schema] of SCHEMAS) {
    it(`${name}: mutated configs parse or fail with TextFormatError, and round-trip`, () => {
      fc.assert(
        fc.property(mutatedText(CORPUS, TOKENS, 6), fc.boolean(), (text, discard) => checkOne(schema, text, discard)),
        fuzzParams(1500),
      );
    });
  }

  it("random text never escapes as another error", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 300 }), (text) => checkOne(ComponentsConfigSchema, text, false)),
      fuzzParams(1500),
    );
  });
});
