// What a Go fixture is and what it holds: a database made by the real Fleetspeak (Go) server and
// clients (test/support/go-fixture.ts builds it), described row kind by row kind so that a server
// which adopts it, or Fleetspeak taking it back, can be checked against the description
// (go-fixture-check.ts) and its pending messages delivered (go-fixture-deliver.ts).
import type { Any } from "@bufbuild/protobuf/wkt";
import type { ClientMachine, MachineState } from "./go-fixture-clients.js";
import type { AllocationRow, ContactRow, GoBackend, ResourceUsageRow } from "./go-fixture-db.js";
import type { GoDeployment } from "./go-server.js";

export type { GoBackend } from "./go-fixture-db.js";

/** Which implementation serves a database: Fleetspeak's (Go) or ours. */
export type ServerKind = "go" | "ours";

export interface ExpectedClient {
  /** The machine's role in the fixture: alpha, beta, gamma, … */
  name: string;
  /** 16 hex digits. */
  clientId: string;
  /** Labels of service "client", sorted (Fleetspeak's client adds its architecture and OS). */
  labels: string[];
  blacklisted: boolean;
  /** False for the client whose contacts were pruned: it must have none. */
  hasContacts: boolean;
  /** Contacts as the database held them when the fixture was made (each must still be there). */
  contacts: ContactRow[];
  /** Resource-usage records as the database held them (each must still be there). */
  resourceUsage: ResourceUsageRow[];
  machine: ClientMachine;
  /**
   * What the machine's state file held: the key, the revoked serials the client fetched from the
   * RevokedCertificates file, and its sequencing nonce (0: Fleetspeak's client writes the nonce
   * only on its once-a-minute sync, and streaming clients never get one).
   */
  state: MachineState;
}

export type ExpectedStatus =
  | { kind: "processed" }
  | { kind: "failed"; reason: string }
  | {
      kind: "pending";
      retryCount: number;
      /** When it is next due, in microseconds since the epoch (Fleetspeak's unit). */
      scheduledTimeUs: bigint;
      /** Due now: its next attempt is owed at once (a server must not wait to deliver it). */
      due: boolean;
    };

export interface ExpectedAddress {
  /** 16 hex digits, or "" for a server service. */
  clientId: string;
  serviceName: string;
}

export interface ExpectedMessage {
  /** What the message stands for in the fixture, e.g. "pending, sent once and never acked". */
  name: string;
  /** 64 hex digits. */
  messageId: string;
  source: ExpectedAddress;
  destination: ExpectedAddress;
  messageType: string;
  creationTime?: { seconds: bigint; nanos: number };
  status: ExpectedStatus;
  /** Payload and annotations of the client-bound pending messages (GetPendingMessages shows them). */
  data?: Any;
  annotations?: Array<[key: string, value: string]>;
}

export interface ExpectedBroadcast {
  name: string;
  /** 16 hex digits. */
  broadcastId: string;
  sourceService: string;
  destinationService: string;
  messageType: string;
  data: Any;
  /** Required labels of service "client". */
  labels: string[];
  /** 2^63-1 is Fleetspeak's "unlimited". */
  limit: bigint;
  /** The broadcasts row's sent count (Fleetspeak adds an allocation's count when it ends it). */
  sent: bigint;
  /** The broadcasts row's allocated count: messages claimed by allocations still open. */
  allocated: bigint;
  /**
   * Allocations left open in broadcast_allocations: none after a clean stop; a killed server
   * leaves the ones it held (their sent counts not yet in `sent`).
   */
  allocations: AllocationRow[];
  expirationTime?: { seconds: bigint; nanos: number };
  /** Listed by ListActiveBroadcasts: not expired and sent < limit. */
  active: boolean;
  /** Client IDs it was sent to (never to be sent to them again). */
  recipients: string[];
}

export interface ExpectedFile {
  service: string;
  name: string;
  data: Buffer;
}

export interface GoFixtureExpected {
  clients: ExpectedClient[];
  messages: ExpectedMessage[];
  broadcasts: ExpectedBroadcast[];
  files: ExpectedFile[];
}

/** How the Go server was stopped at the end: as an operator does, or killed (crash, OOM). */
export type GoServerStop = "sigterm" | "sigkill";

export interface GoFixture {
  backend: GoBackend;
  stop: GoServerStop;
  /** The folder holding the client machines (and the SQLite file). */
  dir: string;
  /** Certificates and configs made by fleetspeak_config, and the addresses they name. */
  deployment: GoDeployment;
  /** mysql_data_source_name as the components config has it ("sqlite:<path>" for SQLite). */
  dataSourceName: string;
  /** MySQL: the Go-style DSN of the database. */
  mysqlDsn?: string;
  /** SQLite: the database file. */
  sqlitePath?: string;
  /** The deployment's CA certificate (PEM). */
  caPem: string;
  /** "localhost:<port>" of the frontend: what the clients dial (the certificate names localhost). */
  publicAddress: string;
  expected: GoFixtureExpected;
  /** Drops the MySQL database and removes the folders. */
  cleanup(): Promise<void>;
}

/** Fleetspeak's "no limit" for broadcasts (it keeps uint64 counts within SQLite's int64). */
export const BROADCAST_UNLIMITED = 9223372036854775807n;

/** A value as JSON, bigints as decimal strings: how the fixture's diffs and errors show values. */
export function show(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? x.toString() : x));
}
