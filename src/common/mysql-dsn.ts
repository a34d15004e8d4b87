// Go MySQL driver data source names, as Fleetspeak configs write them:
//   [user[:password]@][protocol[(address)]]/dbname[?param1=value1&...&paramN=valueN]
// e.g. "fleetspeak:secret@tcp(db.internal:3306)/fleetspeak?parseTime=true".
// Turned into connection options for the mysql2 driver.
import { parseHostPort } from "./net-address.js";

export class DsnError extends Error {}

export interface MysqlConnectionOptions {
  host?: string;
  port?: number;
  socketPath?: string;
  user: string;
  password: string;
  database: string;
  connectTimeoutMs?: number;
  charset?: string;
  /** TLS to the database: "true" / "skip-verify" / "preferred" in Go terms. */
  tls?: "true" | "skip-verify" | "preferred";
  /** Unknown parameters: the Go driver sets them as session system variables, and so do we. */
  sessionVariables: Record<string, string>;
}

// Parameters the Go driver understands that change nothing for us (we always read times as
// integers, and the driver settings below have no mysql2 counterpart worth exposing).
const ACCEPTED_NOOP_PARAMS = new Set([
  "parseTime",
  "loc",
  "allowNativePasswords",
  "allowCleartextPasswords",
  "allowOldPasswords",
  "clientFoundRows",
  "columnsWithAlias",
  "interpolateParams",
  "multiStatements",
  "rejectReadOnly",
  "maxAllowedPacket",
  "checkConnLiveness",
  "collation",
  "readTimeout",
  "writeTimeout",
  "strict",
  "allowAllFiles",
  "serverPubKey",
  "autocommit",
]);

/** Go duration strings such as "30s", "1m30s", "500ms". */
export function parseGoDuration(text: string): number {
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/y;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60000, h: 3600000 };
  let ms = 0;
  let pos = 0;
  if (text === "0") return 0;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) throw new DsnError(`invalid duration ${JSON.stringify(text)} (write it like "30s" or "1m30s")`);
    ms += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  if (text.length === 0) throw new DsnError("empty duration");
  return ms;
}

export function parseMysqlDsn(dsn: string): MysqlConnectionOptions {
  const where = "mysql_data_source_name";
  const lastSlash = dsn.lastIndexOf("/");
  if (lastSlash < 0) {
    throw new DsnError(
      `${where}: missing "/dbname"; expected something like "user:password@tcp(host:3306)/fleetspeak"`,
    );
  }
  const head = dsn.slice(0, lastSlash);
  const tail = dsn.slice(lastSlash + 1);

  let user = "";
  let password = "";
  let addrPart = head;
  const at = head.lastIndexOf("@");
  if (at >= 0) {
    const cred = head.slice(0, at);
    addrPart = head.slice(at + 1);
    const colon = cred.indexOf(":");
    if (colon >= 0) {
      user = cred.slice(0, colon);
      password = cred.slice(colon + 1);
    } else {
      user = cred;
    }
  }

  const opts: MysqlConnectionOptions = { user, password, database: "", sessionVariables: {} };

  if (addrPart !== "") {
    const m = /^([a-z0-9]+)(?:\((.*)\))?$/.exec(addrPart);
    if (!m) {
      throw new DsnError(
        `${where}: cannot understand the address part ${JSON.stringify(addrPart)}; expected "tcp(host:port)" or "unix(/path/to/socket)"`,
      );
    }
    const protocol = m[1]!;
    const address = m[2] ?? "";
    if (protocol === "tcp") {
      let hp: { host: string; port: number };
      try {
        hp = parseHostPort(address === "" ? "127.0.0.1:3306" : address, { defaultPort: 3306 });
      } catch (e) {
        throw new DsnError(`${where}: ${(e as Error).message}`);
      }
      const { host, port } = hp;
      opts.host = host;
      opts.port = port;
    } else if (protocol === "unix") {
      opts.socketPath = address === "" ? "/tmp/mysql.sock" : address;
    } else {
      throw new DsnError(`${where}: unsupported protocol ${JSON.stringify(protocol)}; use tcp or unix`);
    }
  } else {
    opts.host = "127.0.0.1";
    opts.port = 3306;
  }

  const q = tail.indexOf("?");
  const dbRaw = q >= 0 ? tail.slice(0, q) : tail;
  try {
    opts.database = decodeURIComponent(dbRaw);
  } catch {
    throw new DsnError(`${where}: bad escape in database name ${JSON.stringify(dbRaw)}`);
  }
  if (q >= 0) {
    for (const pair of tail.slice(q + 1).split("&")) {
      if (pair === "") continue;
      const eq = pair.indexOf("=");
      if (eq < 0) {
        throw new DsnError(`${where}: parameter ${JSON.stringify(pair)} has no "=value"`);
      }
      const key = pair.slice(0, eq);
      let value: string;
      try {
        value = decodeURIComponent(pair.slice(eq + 1));
      } catch {
        throw new DsnError(`${where}: bad escape in the value of parameter ${JSON.stringify(key)}`);
      }
      applyParam(opts, key, value, where);
    }
  }
  return opts;
}

function applyParam(opts: MysqlConnectionOptions, key: string, value: string, where: string): void {
  switch (key) {
    case "timeout":
      opts.connectTimeoutMs = parseGoDuration(value);
      return;
    case "charset":
      opts.charset = value.split(",")[0]!;
      return;
    case "tls":
      if (value === "true" || value === "skip-verify" || value === "preferred") {
        opts.tls = value;
        return;
      }
      if (value === "false") return;
      throw new DsnError(
        `${where}: tls=${value} is not supported; use true, false, skip-verify or preferred`,
      );
    default:
      if (ACCEPTED_NOOP_PARAMS.has(key)) {
        if (key === "parseTime" || key === "strict" || key === "multiStatements" || key === "interpolateParams") {
          if (!/^(true|false|1|0)$/.test(value)) {
            throw new DsnError(`${where}: parameter ${key} must be true or false, got ${JSON.stringify(value)}`);
          }
        }
        return;
      }
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
        throw new DsnError(`${where}: invalid parameter name ${JSON.stringify(key)}`);
      }
      opts.sessionVariables[key] = value;
  }
}

/**
 * The SQLite file named by a mysql_data_source_name of the form "sqlite:/path/file", or
 * undefined for a MySQL DSN. The Fleetspeak (Go) build that runs its own SQLite datastore in
 * production-like setups selects it this way; accepting the same spelling lets its components
 * config work here unchanged.
 */
export function sqlitePathInDsn(dsn: string): string | undefined {
  return dsn.startsWith("sqlite:") ? dsn.slice("sqlite:".length) : undefined;
}
