// Fuzzing the Go MySQL DSN reader (mysql_data_source_name): any string is either understood or
// refused with DsnError naming the field, and DSNs built from random parts read back as built.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { DsnError, parseMysqlDsn } from "../../src/common/mysql-dsn.js";
import { fuzzParams, fuzzTimeout, onlyThrows } from "./fuzz-params.js";
import { mutatedText } from "./mutate.js";

const CORPUS = [
  "fleetspeak:secret@tcp(db.internal:3306)/fleetspeak?parseTime=true",
  "root@tcp(127.0.0.1)/fs?timeout=1m30s&charset=utf8mb4,utf8&tls=skip-verify",
  "u:p@w:d@unix(/var/run/mysqld/mysqld.sock)/db%20name?sql_mode=%27ANSI%27&loc=Local",
  "/only_db",
  "user@tcp([::1]:3307)/x?readTimeout=500ms&maxAllowedPacket=0&wait_timeout=28800",
];
const TOKENS = ["@", ":", "/", "?", "&", "=", "(", ")", "[", "]", "%", "%zz", "%2", "tcp", "unix", "tls=", "timeout=", "1h", "µs", "99999"];

describe("fuzz: MySQL DSN reader", { timeout: fuzzTimeout(30_000) }, () => {
  it("mutated and random DSNs parse or fail with DsnError", () => {
    fc.assert(
      fc.property(fc.oneof(mutatedText(CORPUS, TOKENS, 6), fc.string({ unit: "binary", maxLength: 120 })), (dsn) =>
        onlyThrows(() => parseMysqlDsn(dsn), DsnError),
      ),
      fuzzParams(5000),
    );
  });

  it("a DSN built from parts reads back as those parts", () => {
    const word = fc.stringMatching(/^[A-Za-z0-9_.-]{0,12}$/);
    fc.assert(
      fc.property(
        fc.record({
          user: word,
          password: fc.stringMatching(/^[A-Za-z0-9_.!$*@:-]{0,12}$/),
          host: fc.oneof(fc.stringMatching(/^[a-z][a-z0-9.-]{0,15}$/), fc.ipV4()),
          port: fc.integer({ min: 1, max: 65535 }),
          database: fc.string({ maxLength: 12 }),
          timeoutSeconds: fc.option(fc.integer({ min: 0, max: 10_000 }), { nil: undefined }),
          variable: fc.option(fc.tuple(fc.stringMatching(/^[a-z_][a-z0-9_]{0,10}$/), fc.string({ maxLength: 10 })), { nil: undefined }),
        }),
        (p) => {
          fc.pre(p.variable === undefined || !["timeout", "charset", "tls", "parseTime", "strict", "loc", "collation", "autocommit"].includes(p.variable[0]));
          const params = [
            ...(p.timeoutSeconds !== undefined ? [`timeout=${p.timeoutSeconds}s`] : []),
            ...(p.variable ? [`${p.variable[0]}=${encodeURIComponent(p.variable[1])}`] : []),
          ];
          const dsn = `${p.user}:${p.password}@tcp(${p.host}:${p.port})/${encodeURIComponent(p.database)}${params.length ? `?${params.join("&")}` : ""}`;
          const o = parseMysqlDsn(dsn);
          assert.equal(o.user, p.user);
          assert.equal(o.password, p.password);
          assert.equal(o.host, p.host);
          assert.equal(o.port, p.port);
          assert.equal(o.database, p.database);
          if (p.timeoutSeconds !== undefined) assert.equal(o.connectTimeoutMs, p.timeoutSeconds * 1000);
          if (p.variable) assert.equal(o.sessionVariables[p.variable[0]], p.variable[1]);
        },
      ),
      fuzzParams(2000),
    );
  });
});
