// A claimer in its own process for mysql-concurrency.test.ts: opens its own MysqlStore (own pool)
// and claims until a whole pass finds nothing; prints the claimed message IDs as one JSON line.
// Usage: node --import tsx claimer-process.ts <dsn> client <hex client ids, comma-separated>
//        node --import tsx claimer-process.ts <dsn> server
import { MysqlStore } from "../../../src/server/store/mysql-store.js";
import { claimAllClientMessages, claimAllServerMessages } from "./claim-loops.js";

const [dsn, mode, list] = process.argv.slice(2);
const store = await MysqlStore.fromDsn(dsn!, { poolSize: 4 });
const clients = (list ?? "").split(",").filter(Boolean).map((h) => Buffer.from(h, "hex"));
process.stdout.write("ready\n");
await new Promise((r) => process.stdin.once("data", r));
process.stdin.destroy();
const ids = mode === "server" ? await claimAllServerMessages(store) : await claimAllClientMessages(store, clients);
await store.close();
process.stdout.write(`${JSON.stringify(ids)}\n`);
