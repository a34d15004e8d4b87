import assert from "node:assert/strict";
import * as http from "node:http";
import { describe, it } from "node:test";
import { startHealthCheck } from "../../../src/server/observe/health.js";
import { captureLog } from "../frontend/helpers.js";

function probe(address: string, method = "GET", path = "/"): Promise<{ status: number; body: string }> {
  const port = Number(address.slice(address.lastIndexOf(":") + 1));
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path, agent: false }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end(method === "POST" ? "payload" : undefined);
  });
}

describe("health check listener", () => {
  it("answers 200 with an empty body to any method and path, as Fleetspeak does", async () => {
    const health = await startHealthCheck({ listenAddress: "127.0.0.1:0", logger: captureLog().logger });
    try {
      assert.match(health.address, /^127\.0\.0\.1:\d+$/);
      for (const [method, path] of [
        ["GET", "/"],
        ["GET", "/healthz"],
        ["POST", "/anything/else"],
        ["HEAD", "/"],
      ] as const) {
        assert.deepEqual(await probe(health.address, method, path), { status: 200, body: "" }, `${method} ${path}`);
      }
    } finally {
      await health.close();
    }
  });

  it("answers 503 with the reason while the readiness check fails, and logs changes only", async () => {
    const log = captureLog();
    let failure: Error | undefined = new Error("database ping failed: connect ECONNREFUSED 127.0.0.1:3306");
    const health = await startHealthCheck({
      listenAddress: "127.0.0.1:0",
      logger: log.logger,
      ready: async () => {
        if (failure) throw failure;
      },
    });
    try {
      for (let i = 0; i < 3; i++) {
        assert.deepEqual(await probe(health.address), {
          status: 503,
          body: "database ping failed: connect ECONNREFUSED 127.0.0.1:3306\n",
        });
      }
      failure = undefined;
      assert.deepEqual(await probe(health.address), { status: 200, body: "" });
      assert.equal(log.find("warn", /readiness check failed/).length, 1);
      assert.equal(log.find("info", /passes again/).length, 1);
    } finally {
      await health.close();
    }
  });

  it("answers 503 when the readiness check hangs or throws synchronously", async () => {
    const hanging = await startHealthCheck({
      listenAddress: "127.0.0.1:0",
      logger: captureLog().logger,
      ready: () => new Promise(() => {}),
      readyTimeoutMs: 100,
    });
    const throwing = await startHealthCheck({
      listenAddress: "127.0.0.1:0",
      logger: captureLog().logger,
      ready: () => {
        throw new Error("not ready");
      },
    });
    try {
      assert.deepEqual(await probe(hanging.address), { status: 503, body: "readiness check did not answer within 100 ms\n" });
      assert.deepEqual(await probe(throwing.address), { status: 503, body: "not ready\n" });
    } finally {
      await hanging.close();
      await throwing.close();
    }
  });

  it("names the config field when it cannot listen", async () => {
    const health = await startHealthCheck({ listenAddress: "127.0.0.1:0", logger: captureLog().logger });
    try {
      await assert.rejects(
        startHealthCheck({ listenAddress: health.address, logger: captureLog().logger }),
        /^Error: health_check_config\.listen_address "127\.0\.0\.1:\d+": cannot listen: the address is in use/,
      );
    } finally {
      await health.close();
    }
  });
});
