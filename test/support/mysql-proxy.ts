// A TCP proxy between a MysqlStore and MariaDB that can cut a connection at the worst moment: right
// after the server has executed (and committed) a query, before its answer reaches the client. The
// store then cannot know from the connection whether its COMMIT happened, which is what a database
// restart or a network failure does to a transaction now and then.
//
// It reads just enough of the MySQL protocol for that: client packets (3-byte length, sequence
// number, payload; COM_QUERY is 0x03 then the SQL text) and the shape of the server's answer to a
// (multi-statement) query, to know when the last result has been sent. mysql2 does not use
// CLIENT_DEPRECATE_EOF, so result sets end with EOF packets.
import * as net from "node:net";

const COM_QUERY = 0x03;
const SERVER_MORE_RESULTS_EXISTS = 0x0008;

export interface MysqlProxy {
  /** The port the proxy listens on (127.0.0.1). */
  readonly port: number;
  /**
   * The next query whose SQL matches `pattern` is forwarded and executed, its whole answer is
   * swallowed, and then both sides of that connection are cut. Resolves with the query's SQL once
   * the cut has happened.
   */
  cutAfterAnswer(pattern: RegExp): Promise<string>;
  /** Connections cut so far. */
  readonly cuts: number;
  /**
   * While down, the database looks gone: open connections are cut and new ones closed at once (a
   * server that crashed, as the store sees it).
   */
  setDown(down: boolean): void;
  close(): Promise<void>;
}

interface Trap {
  pattern: RegExp;
  sprung: (sql: string) => void;
}

/** Packets of a byte stream, as they complete. */
class PacketReader {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const out: Buffer[] = [];
    while (this.buffered.length >= 4) {
      const len = this.buffered.readUIntLE(0, 3);
      if (this.buffered.length < 4 + len) break;
      out.push(this.buffered.subarray(4, 4 + len));
      this.buffered = this.buffered.subarray(4 + len);
    }
    return out;
  }
}

/** Length-encoded integer at `at`: its value and the offset after it. */
function lenenc(b: Buffer, at: number): [number, number] {
  const first = b[at]!;
  if (first < 0xfb) return [first, at + 1];
  if (first === 0xfc) return [b.readUInt16LE(at + 1), at + 3];
  if (first === 0xfd) return [b.readUIntLE(at + 1, 3), at + 4];
  return [Number(b.readBigUInt64LE(at + 1)), at + 9];
}

/** Follows the server's answer to one query, packet by packet, until its last result. */
class AnswerTracker {
  private state: "result" | "columns" | "rows" = "result";
  private columnsLeft = 0;

  /** True once `packet` is the answer's last. */
  next(packet: Buffer): boolean {
    const head = packet[0];
    if (this.state === "result") {
      if (head === 0xff) return true;
      if (head === 0x00) {
        let at = lenenc(packet, 1)[1];
        at = lenenc(packet, at)[1];
        return (packet.readUInt16LE(at) & SERVER_MORE_RESULTS_EXISTS) === 0;
      }
      this.columnsLeft = lenenc(packet, 0)[0];
      this.state = "columns";
      return false;
    }
    if (this.state === "columns") {
      if (this.columnsLeft > 0) this.columnsLeft--;
      else this.state = "rows"; // the EOF after the column definitions
      return false;
    }
    if (head === 0xff) return true;
    if (head === 0xfe && packet.length < 9) {
      const more = (packet.readUInt16LE(3) & SERVER_MORE_RESULTS_EXISTS) !== 0;
      this.state = "result";
      return !more;
    }
    return false;
  }
}

/** A Go-style DSN with its address replaced by the proxy's. */
export function proxiedDsn(dsn: string, port: number): string {
  return dsn.replace(/@(?:tcp|unix)\([^)]*\)\//, `@tcp(127.0.0.1:${port})/`);
}

/** Starts a proxy to `upstream` (host and port, or a unix socket path). */
export async function startMysqlProxy(upstream: { host: string; port: number } | { path: string }): Promise<MysqlProxy> {
  const traps: Trap[] = [];
  const sockets = new Set<net.Socket>();
  let cuts = 0;
  let down = false;

  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const db = net.connect(upstream);
    sockets.add(client);
    sockets.add(db);
    const cut = () => {
      client.destroy();
      db.destroy();
    };
    client.on("error", cut);
    db.on("error", cut);
    client.on("close", () => {
      sockets.delete(client);
      db.destroy();
    });
    db.on("close", () => {
      sockets.delete(db);
      client.destroy();
    });

    // Until the handshake is over, packets are not commands; the first COM_QUERY comes after.
    const fromClient = new PacketReader();
    const fromServer = new PacketReader();
    let swallowing: { tracker: AnswerTracker; sql: string; sprung: (sql: string) => void } | undefined;

    client.on("data", (chunk: Buffer) => {
      db.write(chunk);
      for (const packet of fromClient.push(chunk)) {
        if (packet[0] !== COM_QUERY || swallowing) continue;
        const sql = packet.subarray(1).toString("utf8");
        const i = traps.findIndex((t) => t.pattern.test(sql));
        if (i < 0) continue;
        const [trap] = traps.splice(i, 1);
        swallowing = { tracker: new AnswerTracker(), sql, sprung: trap!.sprung };
      }
    });
    db.on("data", (chunk: Buffer) => {
      if (!swallowing) {
        fromServer.push(chunk);
        client.write(chunk);
        return;
      }
      // Packets of earlier answers may share this chunk: forward those, swallow from the trapped
      // query's answer on. Answers are strictly in order, so the reader's packets after the trap
      // was set belong to it.
      for (const packet of fromServer.push(chunk)) {
        if (swallowing.tracker.next(packet)) {
          const { sql, sprung } = swallowing;
          cuts++;
          cut();
          sprung(sql);
          return;
        }
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    get cuts() {
      return cuts;
    },
    cutAfterAnswer: (pattern) => new Promise((sprung) => traps.push({ pattern, sprung })),
    setDown(on) {
      down = on;
      if (on) for (const s of sockets) s.destroy();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
