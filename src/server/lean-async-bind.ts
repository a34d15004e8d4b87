// Node 20's AsyncResource.prototype.bind gives every bound function a deprecated `asyncResource`
// accessor (DEP0172) whose getter and setter are each wrapped by util.deprecate at every call;
// with the prototype juggling that does, one bind costs ~9 µs of CPU here (a plain closure ~0.5).
// node:http2 binds once per ClientHttp2Session.request(), so a frontend forwarding thousands of
// messages a second to its Processor spent ~7 % of its CPU building accessors nobody reads.
// Later Node releases no longer add the property (DEP0172 became End-of-Life, nodejs/node#58618);
// installLeanAsyncResourceBind gives the running Node that behaviour when it still has the old one.
import { AsyncResource } from "node:async_hooks";

/** Whether this Node's bind still attaches the deprecated `asyncResource` accessor. */
export function bindAddsAsyncResourceProperty(): boolean {
  const bound = new AsyncResource("fleetspeak-probe").bind(() => {});
  return Object.getOwnPropertyDescriptor(bound, "asyncResource") !== undefined;
}

type AnyFunction = (...args: unknown[]) => unknown;

function leanBind(this: AsyncResource, fn: AnyFunction, thisArg?: unknown): AnyFunction {
  if (typeof fn !== "function") {
    const e = new TypeError(`The "fn" argument must be of type function. Received ${fn === null ? "null" : typeof fn}`);
    (e as NodeJS.ErrnoException).code = "ERR_INVALID_ARG_TYPE";
    throw e;
  }
  const resource = this;
  // As Node's own: without thisArg the wrapper passes on the `this` it is called with.
  const bound =
    thisArg === undefined
      ? function (this: unknown, ...args: unknown[]) {
          return resource.runInAsyncScope(fn, this, ...args);
        }
      : (...args: unknown[]) => resource.runInAsyncScope(fn, thisArg, ...args);
  Object.defineProperty(bound, "length", { configurable: true, enumerable: false, writable: false, value: fn.length });
  return bound;
}

/**
 * Makes AsyncResource#bind (and so AsyncResource.bind) return a plain wrapper, without the
 * deprecated accessor, when this Node still adds one. Returns whether it changed anything. The
 * wrapper runs the function in the resource's async scope, with the same `this` and arguments
 * and the same `length`, as Node's own.
 */
export function installLeanAsyncResourceBind(): boolean {
  if (AsyncResource.prototype.bind === leanBind || !bindAddsAsyncResourceProperty()) return false;
  Object.defineProperty(AsyncResource.prototype, "bind", {
    configurable: true,
    enumerable: false,
    writable: true,
    value: leanBind,
  });
  return true;
}
