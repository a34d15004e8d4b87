import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseArgs } from "node:util";
import { goStyleArgs } from "../../src/common/go-flags.js";

describe("goStyleArgs", () => {
  it("turns Go single-dash flags into double-dash ones", () => {
    assert.deepEqual(goStyleArgs(["-config", "/etc/x", "-alsologtostderr", "-v=2"]), [
      "--config",
      "/etc/x",
      "--alsologtostderr",
      "--v=2",
    ]);
  });

  it("keeps double-dash flags and values unchanged", () => {
    assert.deepEqual(goStyleArgs(["--config=/a", "value-with-dash", "-", "-5"]), [
      "--config=/a",
      "value-with-dash",
      "-",
      "-5",
    ]);
  });

  it("leaves everything after -- alone", () => {
    assert.deepEqual(goStyleArgs(["--", "-config"]), ["--", "-config"]);
  });

  it("feeds node:util parseArgs", () => {
    const { values } = parseArgs({
      args: goStyleArgs(["-config=/etc/fleetspeak-client/client.config", "-std_forward"]),
      options: { config: { type: "string" }, std_forward: { type: "boolean" } },
    });
    assert.equal(values.config, "/etc/fleetspeak-client/client.config");
    assert.equal(values.std_forward, true);
  });
});
