import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseMysqlDsn } from "../../src/common/mysql-dsn.js";

describe("Go-style MySQL DSNs", () => {
  it("parses the usual Fleetspeak form", () => {
    const o = parseMysqlDsn("fleetspeak-user:fleetspeak-password@tcp(mysql-server:3306)/fleetspeak?parseTime=true");
    assert.equal(o.user, "fleetspeak-user");
    assert.equal(o.password, "fleetspeak-password");
    assert.equal(o.host, "mysql-server");
    assert.equal(o.port, 3306);
    assert.equal(o.database, "fleetspeak");
  });

  it("keeps '@', ':' and '/' inside passwords (the last @ before the last / splits)", () => {
    const o = parseMysqlDsn("u:p@ss:w/rd@tcp(127.0.0.1:3307)/db");
    assert.equal(o.password, "p@ss:w/rd");
    assert.equal(o.port, 3307);
  });

  it("supports unix sockets, defaults, IPv6, timeouts and session variables", () => {
    const u = parseMysqlDsn("root@unix(/run/mysqld/mysqld.sock)/fs");
    assert.equal(u.socketPath, "/run/mysqld/mysqld.sock");
    assert.equal(u.password, "");
    const d = parseMysqlDsn("/fs");
    assert.equal(d.host, "127.0.0.1");
    assert.equal(d.port, 3306);
    const v6 = parseMysqlDsn("u:p@tcp([::1]:3306)/fs?timeout=1m30s&sql_mode=TRADITIONAL&charset=utf8mb4,utf8");
    assert.equal(v6.host, "::1");
    assert.equal(v6.connectTimeoutMs, 90000);
    assert.equal(v6.charset, "utf8mb4");
    assert.deepEqual(v6.sessionVariables, { sql_mode: "TRADITIONAL" });
  });

  it("names the part that is wrong", () => {
    assert.throws(() => parseMysqlDsn("user:pass@tcp(host:3306)"), /missing "\/dbname"/);
    assert.throws(() => parseMysqlDsn("u@tcp(host:99999)/db"), /invalid port "99999"/);
    assert.throws(() => parseMysqlDsn("u@udp(host:1)/db"), /unsupported protocol "udp"/);
    assert.throws(() => parseMysqlDsn("u@tcp(host:1/db"), /address part/);
    assert.throws(() => parseMysqlDsn("u@tcp(h:1)/db?timeout=soon"), /invalid duration "soon"/);
    assert.throws(() => parseMysqlDsn("u@tcp(h:1)/db?parseTime=maybe"), /parseTime must be true or false/);
    assert.throws(() => parseMysqlDsn("u@tcp(h:1)/db?novalue"), /has no "=value"/);
  });
});
