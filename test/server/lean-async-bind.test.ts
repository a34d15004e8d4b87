import assert from "node:assert/strict";
import { AsyncLocalStorage, AsyncResource, executionAsyncId } from "node:async_hooks";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { bindAddsAsyncResourceProperty, installLeanAsyncResourceBind } from "../../src/server/lean-async-bind.js";

describe("lean AsyncResource#bind", () => {
  // Each test file runs in its own process: installing here changes nothing elsewhere.
  const hadProperty = bindAddsAsyncResourceProperty();
  const installed = installLeanAsyncResourceBind();

  it("is installed exactly when this Node adds the deprecated asyncResource property, and only once", () => {
    assert.equal(installed, hadProperty);
    if (process.versions.node.startsWith("20.")) assert.equal(hadProperty, true, "Node 20 adds the property");
    assert.equal(bindAddsAsyncResourceProperty(), false);
    assert.equal(installLeanAsyncResourceBind(), false);
  });

  it("runs the function in the resource's async scope, with its arguments and result", () => {
    const als = new AsyncLocalStorage<string>();
    const resource = als.run("at creation", () => new AsyncResource("test"));
    const bound = resource.bind((a: number, b: number) => ({ store: als.getStore(), id: executionAsyncId(), sum: a + b }));
    const seen = als.run("at call", () => bound(2, 3));
    assert.deepEqual(seen, { store: "at creation", id: resource.asyncId(), sum: 5 });
    assert.equal(als.run("static", () => AsyncResource.bind(() => als.getStore()))(), "static");
  });

  it("keeps `this` as Node's does: the caller's without thisArg, thisArg with it; and the length", () => {
    const resource = new AsyncResource("test");
    function whoAmI(this: unknown, _a: unknown, _b: unknown) {
      return this;
    }
    const obj = { m: resource.bind(whoAmI) };
    assert.equal(obj.m(1, 2), obj);
    const fixed = {};
    // (@types/node 20 leaves out bind's documented second parameter.)
    const bindWithThis = resource.bind as (fn: typeof whoAmI, thisArg: unknown) => typeof whoAmI;
    const withThis = { m: bindWithThis.call(resource, whoAmI, fixed) };
    assert.equal(withThis.m(1, 2), fixed);
    assert.equal(obj.m.length, 2);
    assert.equal(Object.getOwnPropertyDescriptor(obj.m, "asyncResource"), undefined);
  });

  it("rejects what is not a function as Node does", () => {
    assert.throws(() => new AsyncResource("test").bind(42 as never), { name: "TypeError", code: "ERR_INVALID_ARG_TYPE" });
  });

  it("leaves node:http2 requests working, made while the session connects and after", async () => {
    const server = http2.createServer();
    server.on("stream", (stream, headers) => {
      stream.respond({ ":status": 200 });
      stream.end(`you asked for ${headers[":path"]}`);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const als = new AsyncLocalStorage<string>();
    const get = (path: string) =>
      new Promise<{ body: string; store: string | undefined }>((resolve, reject) => {
        const req = session.request({ ":path": path });
        let body = "";
        req.setEncoding("utf8");
        req.on("data", (c: string) => {
          body += c;
        });
        req.on("end", () => resolve({ body, store: als.getStore() }));
        req.on("error", reject);
        req.end();
      });
    try {
      assert.equal(session.connecting, true);
      const first = await als.run("first", () => get("/while-connecting"));
      const second = await als.run("second", () => get("/connected"));
      assert.deepEqual(first, { body: "you asked for /while-connecting", store: "first" });
      assert.deepEqual(second, { body: "you asked for /connected", store: "second" });
    } finally {
      session.close();
      await new Promise((r) => server.close(r));
    }
  });
});
