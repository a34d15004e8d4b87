// The faults of the fault table, each applied to a running seed topology and undone (the process
// or database node started again) so that the next one, or the same one again, finds the
// topology whole. A fault resolves once it is undone and the topology has settled.
import { setTimeout as sleep } from "node:timers/promises";
import type { GaleraCluster } from "../../test/support/galera.js";
import type { MariadbInstance } from "../../test/support/mariadb-instance.js";
import { readMetrics } from "../loadgen/servers.js";
import { nowMs } from "../loadgen/wire.js";
import type { SeedTopology, ServerName } from "./seed-topology.js";

export const FAULTS = ["frontend-kill", "admin-kill", "db-restart", "node-kill", "frontend-term"] as const;
export type FaultName = (typeof FAULTS)[number];

export interface FaultTarget {
  topo: SeedTopology;
  /** The single MariaDB (db-restart), or the Galera cluster (node-kill). */
  mariadb?: MariadbInstance;
  galera?: GaleraCluster;
  /** Which Galera node to kill (index); the writer of a single-writer setup is node 0. */
  galeraNode?: number;
  log: (s: string) => void;
}

/** What happened, in wall-clock ms: the fault, and when it was undone. */
export interface AppliedFault {
  name: FaultName;
  at: number;
  undoneAt: number;
  detail: string;
}

/** How long a killed process or node stays down before it is started again. */
const DOWN_MS = 5_000;

/** The frontend holding more streams: killing it moves the most clients. */
async function busierFrontend(topo: SeedTopology): Promise<ServerName> {
  const held = await Promise.all(
    (["frontend-1", "frontend-2"] as const).map(async (name) => {
      const s = topo.server(name);
      const m = s ? await readMetrics(s.metricsAddress, ["fleetspeak_frontend_connected_clients"]) : {};
      return [name, m.fleetspeak_frontend_connected_clients ?? 0] as const;
    }),
  );
  held.sort((a, b) => b[1] - a[1]);
  return held[0]![0];
}

export async function applyFault(name: FaultName, t: FaultTarget): Promise<AppliedFault> {
  switch (name) {
    case "frontend-kill":
    case "frontend-term": {
      const victim = await busierFrontend(t.topo);
      const at = nowMs();
      await t.topo.stopServer(victim, name === "frontend-kill" ? "SIGKILL" : "SIGTERM");
      const stoppedMs = Math.round(nowMs() - at);
      await sleep(DOWN_MS);
      await t.topo.startServer(victim);
      return { name, at, undoneAt: nowMs(), detail: `${victim} (exited after ${stoppedMs} ms)` };
    }
    case "admin-kill": {
      const at = nowMs();
      await t.topo.stopServer("admin-1", "SIGKILL");
      await sleep(DOWN_MS);
      await t.topo.startServer("admin-1");
      return { name, at, undoneAt: nowMs(), detail: "admin-1" };
    }
    case "db-restart": {
      if (!t.mariadb) throw new Error("db-restart needs the single MariaDB setup");
      const at = nowMs();
      await t.mariadb.stop();
      const stoppedMs = Math.round(nowMs() - at);
      // A small test database stops and starts in a second; a production one takes longer.
      await sleep(DOWN_MS);
      await t.mariadb.start();
      return { name, at, undoneAt: nowMs(), detail: `stop ${stoppedMs} ms, down ${Math.round(nowMs() - at)} ms` };
    }
    case "node-kill": {
      if (!t.galera) throw new Error("node-kill needs a Galera setup");
      const node = t.galera.nodes[t.galeraNode ?? 0]!;
      const at = nowMs();
      await node.kill();
      await sleep(DOWN_MS);
      await node.start();
      await t.galera.waitSynced();
      return { name, at, undoneAt: nowMs(), detail: `${node.name}, rejoined after ${Math.round(nowMs() - at)} ms` };
    }
  }
}
