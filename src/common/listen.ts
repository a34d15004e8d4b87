// Binding a configured listen address, with the one-line error an operator can act on: the config
// field and its value, what the system said, and what to do. Every listener of the server binds
// through here, so "address in use" reads the same for each of them.
import type { AddressInfo, Server } from "node:net";
import { parseHostPort } from "./net-address.js";

export class ListenError extends Error {}

/** What to do about the usual reasons a bind fails. */
function explain(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case "EADDRINUSE":
      return "the address is in use by another process (a server already running?); stop it, or listen elsewhere";
    case "EACCES":
      return "permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE (the systemd unit grants it)";
    case "EADDRNOTAVAIL":
      return "this machine has no such address; use one of its own, or 0.0.0.0 for all of them";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "the host name does not resolve on this machine; use an IP address";
    default:
      return err.message;
  }
}

/**
 * Listens on `address` ("host:port", ":port" for every interface); rejects with a ListenError
 * naming `field` and `address`. Errors after a successful bind are the caller's to handle.
 * `exclusive`: in a node:cluster worker, bind the socket in this process instead of sharing one the
 * primary accepts on (for a port only this worker serves).
 */
export function listen(server: Server, address: string, field: string, exclusive = false): Promise<AddressInfo> {
  const { host, port } = parseHostPort(address, { emptyHost: "" });
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) =>
      reject(new ListenError(`${field} ${JSON.stringify(address)}: cannot listen: ${explain(err)} (${err.code ?? err.message})`));
    server.once("error", onError);
    server.listen({ port, ...(host === "" ? {} : { host }), ...(exclusive ? { exclusive } : {}) }, () => {
      server.off("error", onError);
      resolve(server.address() as AddressInfo);
    });
  });
}
