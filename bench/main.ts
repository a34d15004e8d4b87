// Benchmark dispatcher: npm run bench -- <scenario> [options]. Each scenario is a module
// exporting run(args).
const scenarios: Record<string, () => Promise<{ run(args: string[]): Promise<void> }>> = {
  admin: () => import("./admin.js"),
  client: () => import("./client.js"),
  console: () => import("./console.js"),
  faults: () => import("./faults.js"),
  hold: () => import("./hold.js"),
  ingest: () => import("./ingest.js"),
  mosquitto: () => import("./mosquitto.js"),
  poll: () => import("./poll.js"),
  push: () => import("./push.js"),
  roundtrip: () => import("./roundtrip.js"),
  store: () => import("./store.js"),
};

const [name, ...args] = process.argv.slice(2);
const load = name === undefined ? undefined : scenarios[name];
if (!load) {
  console.error(`usage: npm run bench -- <scenario> [options]; scenarios: ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
await (await load()).run(args);
process.exit(0);
