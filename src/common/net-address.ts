// host:port addresses as Go writes them: "host:port", "[v6]:port", ":port" (all interfaces).

export class AddressError extends Error {}

export interface HostPort {
  host: string;
  port: number;
}

/**
 * Splits an address. An empty host ("":port) becomes `emptyHost` (default "127.0.0.1" for
 * dialing; listeners pass "::" or "0.0.0.0").
 */
export function parseHostPort(
  address: string,
  opts: { defaultPort?: number; emptyHost?: string } = {},
): HostPort {
  let host: string;
  let portText: string | undefined;
  if (address.startsWith("[")) {
    const close = address.indexOf("]");
    if (close < 0) throw new AddressError(`unterminated "[" in address ${JSON.stringify(address)}`);
    host = address.slice(1, close);
    const rest = address.slice(close + 1);
    if (rest.startsWith(":")) portText = rest.slice(1);
    else if (rest !== "") {
      throw new AddressError(`unexpected ${JSON.stringify(rest)} after "]" in address ${JSON.stringify(address)}`);
    }
  } else {
    const colon = address.lastIndexOf(":");
    if (colon >= 0 && address.indexOf(":") === colon) {
      host = address.slice(0, colon);
      portText = address.slice(colon + 1);
    } else if (colon >= 0) {
      throw new AddressError(`IPv6 address ${JSON.stringify(address)} must be written as [addr]:port`);
    } else {
      host = address;
    }
  }
  let port: number;
  if (portText === undefined || portText === "") {
    if (opts.defaultPort === undefined) {
      throw new AddressError(`address ${JSON.stringify(address)} needs a port, as in "host:port"`);
    }
    port = opts.defaultPort;
  } else {
    if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
      throw new AddressError(`invalid port ${JSON.stringify(portText)} in address ${JSON.stringify(address)}`);
    }
    port = Number(portText);
  }
  return { host: host === "" ? (opts.emptyHost ?? "127.0.0.1") : host, port };
}

/** Formats host and port back, bracketing IPv6 literals. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Whether an address ("host:port") names this machine only: localhost, 127.0.0.0/8 or ::1. */
export function isLoopbackAddress(address: string): boolean {
  try {
    return isLoopbackHost(parseHostPort(address, { emptyHost: "" }).host);
  } catch {
    return false;
  }
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}
